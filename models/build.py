"""Build networks and the score model from a config: the one place models/ reads config keys."""

from __future__ import annotations

from sde import SDE, make_sde, sde_parameters

from .score import ScoreModel


def make_sde_from_config(cfg) -> SDE:
    """The path named by cfg.sde.name, with the keys of cfg.sde that its constructor takes (the others are
    other paths' parameters)."""
    s = cfg.sde
    return make_sde(s.name, **{key: s[key] for key in sde_parameters(s.name)})


def data_shape(cfg) -> tuple[int, ...]:
    """Shape of one example: [C, H, W] for images, [d] for toy vectors."""
    if cfg.model.name == "mlp":
        return (cfg.data.dim,)
    return (cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)


def make_net(cfg):
    """The eps-network named by cfg.model.name."""
    m = cfg.model
    if m.name == "unet":
        from .unet import UNet

        return UNet(in_channels=cfg.data.num_channels, image_size=cfg.data.image_size,
                    base_channels=m.base_channels, channel_mult=tuple(m.channel_mult),
                    num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
                    dropout=m.dropout, num_classes=m.num_classes)
    if m.name == "mlp":
        from .mlp import MLP

        return MLP(dim=cfg.data.dim, hidden=m.hidden, depth=m.depth, num_classes=m.num_classes)
    raise ValueError(f"unknown model {m.name!r}; valid: ['unet', 'mlp']")


def make_score_model(cfg, sde: SDE | None = None) -> ScoreModel:
    """ScoreModel(net, sde) as the config describes (on CPU; the driver moves it)."""
    m = cfg.model
    return ScoreModel(make_net(cfg), sde or make_sde_from_config(cfg), precision=m.precision,
                      parameterization=m.parameterization, sigma_data=m.sigma_data)
