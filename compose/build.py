"""Build the objects a config describes: the path, the networks (score model, noisy classifier), the training data.
The one place where config keys become constructor arguments of sde/, models/ and data/."""

from __future__ import annotations

from torch import nn

from data.datasets import make_dataset
from data.mnist import mirror_list
from data.toy import make_mixture
from models.classifier import NoisyClassifier, NoisyMLPClassifier
from models.mlp import MLP
from models.score import ScoreModel
from models.unet import UNet
from sde import SDE, make_sde, sde_parameters


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
        return UNet(
            in_channels=cfg.data.num_channels,
            image_size=cfg.data.image_size,
            base_channels=m.base_channels,
            channel_mult=tuple(m.channel_mult),
            num_res_blocks=m.num_res_blocks,
            attn_resolutions=tuple(m.attn_resolutions),
            dropout=m.dropout,
            num_classes=m.num_classes,
        )
    if m.name == "mlp":
        return MLP(dim=cfg.data.dim, hidden=m.hidden, depth=m.depth, num_classes=m.num_classes)
    raise ValueError(f"unknown model {m.name!r}; valid: ['unet', 'mlp']")


def make_score_model(cfg, sde: SDE | None = None) -> ScoreModel:
    """ScoreModel(net, sde) as the config describes (on CPU; the driver moves it)."""
    m = cfg.model
    return ScoreModel(
        make_net(cfg),
        sde or make_sde_from_config(cfg),
        precision=m.precision,
        parameterization=m.parameterization,
        sigma_data=m.sigma_data,
    )


def make_train_data(cfg):
    """The training data: an object with batch(batch_size, generator) -> (x in model space, y or None)."""
    d = cfg.data
    if d.dataset == "gmm":
        return make_mixture("gmm2d", d.dim)
    if d.dataset == "mnist":
        return make_dataset(
            "mnist",
            source=d.source,
            root=d.root,
            split="train",
            dequantize=d.dequantize,
            seed=cfg.seed,
            base_url=mirror_list(d.mirrors),
        )
    return make_dataset(d.dataset)


def classifier_arch(cfg, num_classes: int) -> dict:
    """Constructor arguments (plain data, stored in the checkpoint) of the classifier that fits cfg's data."""
    c = cfg.classifier
    if cfg.model.name == "mlp":
        return {
            "name": "NoisyMLPClassifier",
            "dim": cfg.data.dim,
            "num_classes": num_classes,
            "hidden": c.hidden,
            "depth": c.depth,
        }
    return {
        "name": "NoisyClassifier",
        "in_channels": cfg.data.num_channels,
        "image_size": cfg.data.image_size,
        "num_classes": num_classes,
        "base_channels": c.base_channels,
    }


def build_classifier(arch: dict) -> nn.Module:
    """The network an `arch` dict describes."""
    classes = {"NoisyClassifier": NoisyClassifier, "NoisyMLPClassifier": NoisyMLPClassifier}
    kwargs = dict(arch)
    name = kwargs.pop("name")
    if name not in classes:
        raise ValueError(f"unknown classifier {name!r}; valid: {sorted(classes)}")
    return classes[name](**kwargs)


def data_num_classes(data) -> int:
    """Number of classes of a labelled training set (GaussianMixture or ImageData)."""
    if getattr(data, "num_classes", None):
        return int(data.num_classes)
    labels = getattr(data, "labels", None)
    if labels is None:
        raise ValueError(
            f"classifier training needs labelled data (MNIST or the 'gmm' mixture); {type(data).__name__} has no labels"
        )
    return int(labels.max()) + 1
