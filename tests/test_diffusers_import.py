"""A diffusers DDPM pipeline (UNet2DModel + DDPMScheduler) into ours (compose/import_diffusers.py): a tiny random
UNet2DModel built with the installed library gives the same eps as our converted DDPM U-Net, on safetensors and
.bin weights, and its scheduler's alpha-bar is our chain's. Needs the optional `compat` extra (diffusers)."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the optional compat extra (diffusers) is not installed")

HO_BLOCKS = dict(
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)


def tiny_unet(seed: int = 0, **overrides):
    """Ho et al.'s layout at 16x16, 3 levels, attention at 8x8, every weight perturbed (none zero)."""
    torch.manual_seed(seed)
    options = dict(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(32, 64, 64),
        attention_head_dim=None, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        act_fn="silu", norm_num_groups=32, **HO_BLOCKS,
    )  # fmt: skip
    options.update(overrides)
    unet = diffusers.UNet2DModel(**options)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def save_pipeline(unet, folder, safe: bool = True, **scheduler):
    unet.save_pretrained(folder / "unet", safe_serialization=safe)
    diffusers.DDPMScheduler(num_train_timesteps=1000, **scheduler).save_pretrained(folder / "scheduler")


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_converted_unet_gives_diffusers_eps(tmp_path, safe):
    from compose.checkpoints import load_score_model
    from compose.import_diffusers import import_diffusers

    unet = tiny_unet()
    save_pipeline(unet, tmp_path / "pipe", safe=safe)
    import_diffusers(tmp_path / "pipe", tmp_path / "work")
    model, stored = load_score_model(tmp_path / "work")
    assert stored["model"]["attn_every_block"] and stored["sde"]["name"] == "ddpm"
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([0, 10, 499, 999])
    with torch.no_grad():
        theirs = unet(x, k).sample
        ours = model.eps(x, (k + 1) / 1000.0)  # step k is our t = (k + 1) / N
    assert float((ours - theirs).abs().max()) < 1e-5 * float(theirs.abs().max())
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    ab = model.sde.alphas_cumprod.float()
    assert torch.allclose(ab, scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_cosine_schedule_and_variance_carry_over(tmp_path):
    from compose.import_diffusers import import_diffusers
    from infra.checkpoint import read_checkpoint

    save_pipeline(tiny_unet(), tmp_path / "pipe", beta_schedule="squaredcos_cap_v2", variance_type="fixed_large")
    import_diffusers(tmp_path / "pipe", tmp_path / "work")
    cfg = json.loads(read_checkpoint(tmp_path / "work")[1]["config"])
    assert cfg["sde"]["name"] == "cosine" and cfg["sampling"]["ancestral_variance"] == "forward"


def test_other_layouts_are_refused_by_name(tmp_path):
    from compose.import_diffusers import config_from_diffusers

    for overrides, message in [
        (dict(flip_sin_to_cos=True), "flip_sin_to_cos = True"),
        (dict(time_embedding_type="fourier"), "time_embedding_type = 'fourier'"),
        (dict(down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")), "different resolutions"),
    ]:
        config = dict(tiny_unet().config) | overrides
        with pytest.raises(ValueError, match=message):
            config_from_diffusers(config, None)
    with pytest.raises(ValueError, match="prediction_type = 'v_prediction'"):
        config_from_diffusers(dict(tiny_unet().config), {"prediction_type": "v_prediction"})


def test_weights_that_do_not_line_up_are_listed(tmp_path):
    from compose.import_diffusers import import_diffusers
    from infra.checkpoint import CheckpointError

    unet = tiny_unet()
    save_pipeline(unet, tmp_path / "pipe")
    config = json.loads((tmp_path / "pipe" / "unet" / "config.json").read_text())
    config["layers_per_block"] = 1  # the config no longer describes the weights
    (tmp_path / "pipe" / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not line up"):
        import_diffusers(tmp_path / "pipe", tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_imported_pipeline_samples_like_diffusers_ddpm_loop(tmp_path):
    """End to end: diffusers' DDPMScheduler loop over its UNet2DModel (50 steps, fixed_small, no clipping) and our
    ancestral sampler over the imported model, from the same start and noise, give the same images."""
    from compose.checkpoints import load_score_model
    from compose.import_diffusers import import_diffusers
    from samplers import SAMPLERS

    unet = tiny_unet(seed=3)
    save_pipeline(unet, tmp_path / "pipe")
    import_diffusers(tmp_path / "pipe", tmp_path / "work")
    model, _ = load_score_model(tmp_path / "work")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(50)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x, gen = x_T, torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k in sched.timesteps:
            x = sched.step(unet(x, k).sample, k, x, generator=gen).prev_sample
        grid = torch.tensor([(int(k) + 1) / 1000 for k in sched.timesteps], dtype=torch.float64)
        ours = SAMPLERS["ancestral"](model.score_fn(), model.sde, x_T, grid, variance="posterior",
                                     generator=torch.Generator().manual_seed(1))  # fmt: skip
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
