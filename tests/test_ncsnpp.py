"""NCSN++ / DDPM++ / DDPM networks (models/ncsnpp.py, models/ddpm.py) and FIR resampling (models/upfirdn.py).

upfirdn2d is checked against a direct loop over its definition (zero insertion, padding, convolution with the
kernel, decimation) with an asymmetric kernel, so a correlation-for-convolution slip shows; the fused resampling
convolutions equal their unfused definitions away from the border; parameter counts at CIFAR-10 size equal those of
score_sde's own networks for its configs (counted with its code at commit cb1f359) and Ho et al.'s 35.7M.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.ddpm import DDPM
from models.ncsnpp import NCSNpp
from models.upfirdn import conv_downsample_2d, downsample_2d, upfirdn2d, upsample_2d, upsample_conv_2d


def upfirdn_reference(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """The definition, one output pixel at a time: y[i, j] = sum_ab z[i*down + a, j*down + b] k[K-1-a, K-1-b]."""
    n, c, h, w = x.shape
    z = np.zeros((n, c, h * up, w * up))
    z[:, :, ::up, ::up] = x
    p0, p1 = pad
    z = np.pad(z, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    if p0 < 0:
        z = z[:, :, -p0:, -p0:]
    if p1 < 0:
        z = z[:, :, :p1, :p1]
    kh = k.shape[0]
    out_h = (z.shape[2] - kh) // down + 1
    out = np.zeros((n, c, out_h, out_h))
    for i in range(out_h):
        for j in range(out_h):
            patch = z[:, :, i * down : i * down + kh, j * down : j * down + kh]
            out[:, :, i, j] = (patch * k[::-1, ::-1]).sum(axis=(2, 3))
    return out


@pytest.mark.parametrize(
    "up,down,pad", [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (0, -1)), (3, 1, (2, 0))]
)
def test_upfirdn2d_is_its_definition(up, down, pad):
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 4))  # asymmetric kernel
    ours = upfirdn2d(torch.from_numpy(x), torch.from_numpy(k), up=up, down=down, pad=pad).numpy()
    np.testing.assert_allclose(ours, upfirdn_reference(x, k, up, down, pad), rtol=1e-12, atol=1e-12)


def test_fir_resampling_keeps_constants_and_fused_convs_match_their_definition():
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    assert torch.allclose(upsample_2d(x)[..., 2:-2, 2:-2], x.new_full((1, 2, 12, 12), 3.0))
    assert torch.allclose(downsample_2d(x)[..., 1:-1, 1:-1], x.new_full((1, 2, 2, 2), 3.0))
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(5, 3, 3, 3, dtype=torch.float64)
    fused_up, plain_up = upsample_conv_2d(x, w), F.conv2d(upsample_2d(x), w, padding=1)
    assert fused_up.shape == plain_up.shape == (2, 5, 16, 16)
    assert torch.allclose(fused_up[..., 2:-2, 2:-2], plain_up[..., 2:-2, 2:-2], atol=1e-12)
    fused_down, plain_down = conv_downsample_2d(x, w), downsample_2d(F.conv2d(x, w, padding=1))
    assert fused_down.shape == plain_down.shape == (2, 5, 4, 4)
    assert torch.allclose(fused_down[..., 1:-1, 1:-1], plain_down[..., 1:-1, 1:-1], atol=1e-12)
    # Differentiable to second order (no custom kernel): the Hessian-vector product of a scalar exists.
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(upsample_conv_2d(x, w).pow(2).sum(), x, create_graph=True)
    (hvp,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(hvp).all()


# score_sde's networks for its CIFAR-10 configs, counted with its own code (models.utils.create_model) at commit
# cb1f359: DDPM++ cont. and NCSN++ cont. (4 blocks per level) and their deep variants (8), and its 'ddpm' model,
# which applies attention once per decoder level; Ho et al.'s U-Net (attention after every decoder block) is the
# published 35.7M.
PUBLISHED = {
    "DDPM++ cont. (vp/cifar10_ddpmpp_continuous)": ("ddpmpp", 4, 61_804_419),
    "DDPM++ cont. deep (vp/cifar10_ddpmpp_deep_continuous)": ("ddpmpp", 8, 106_632_579),
    "NCSN++ cont. (ve/cifar10_ncsnpp_continuous)": ("ncsnpp", 4, 62_758_915),
    "NCSN++ cont. deep (ve/cifar10_ncsnpp_deep_continuous)": ("ncsnpp", 8, 107_587_075),
    "score_sde ddpm (vp/ddpm/cifar10_continuous)": ("ddpm", 2, 35_218_947),
}


def test_parameter_counts_at_cifar10_size(capsys):
    import importlib

    from compose.build import make_net

    configs = {
        "ddpmpp": {4: "cifar10_ddpmpp_continuous", 8: "cifar10_ddpmpp_deep_continuous"},
        "ncsnpp": {4: "cifar10_ncsnpp_continuous", 8: "cifar10_ncsnpp_deep_continuous"},
        "ddpm": {2: "cifar10_ddpm_continuous"},
    }
    lines = []
    for name, (kind, blocks, expected) in PUBLISHED.items():
        cfg = importlib.import_module(f"configs.{configs[kind][blocks]}").get_config()
        with torch.device("meta"):  # no memory, no init work
            count = sum(p.numel() for p in make_net(cfg).parameters())
        lines.append(f"{name}: {count:,} (score_sde: {expected:,})")
        assert count == expected, lines[-1]
    with torch.device("meta"):
        ho = sum(p.numel() for p in DDPM(attn_every_block=True).parameters())
    lines.append(f"DDPM U-Net, Ho et al. 2020 layout: {ho:,} (published 35.7M)")
    assert round(ho / 1e5) == 357, lines[-1]
    with capsys.disabled():
        print("\n" + "\n".join(lines))


OPTIONS = list(
    itertools.product(("ddpm", "biggan"), ("none", "output_skip", "residual"), ("none", "input_skip", "residual"))
)


@pytest.mark.parametrize("resblock_type,progressive,progressive_input", OPTIONS)
def test_every_ncsnpp_layout_runs_and_trains(resblock_type, progressive, progressive_input):
    """Each combination of block type and pyramids builds, keeps the shape, and passes gradients to every weight
    that should learn (the Fourier weight stays fixed)."""
    torch.manual_seed(0)
    fourier = progressive_input != "none"  # exercise both embeddings and both combine methods across the grid
    net = NCSNpp(
        image_size=8, num_channels=3, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
        resblock_type=resblock_type, progressive=progressive, progressive_input=progressive_input,
        progressive_combine="cat" if progressive == "none" else "sum", fir=resblock_type == "biggan",
        embedding_type="fourier" if fourier else "positional", scale_by_sigma=fourier, init_scale=0.1,
    )  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    label = torch.tensor([0.5, 3.0]) if fourier else torch.tensor([10.0, 900.0])
    out = net(x, label)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    silent = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, silent
    if fourier:
        assert not net.all_modules[0].W.requires_grad  # Gaussian Fourier features: fixed, as in score_sde


def test_bad_network_options_are_named():
    with pytest.raises(ValueError, match="unknown progressive 'both'"):
        NCSNpp(progressive="both")
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        DDPM(nonlinearity="gelu")
    with pytest.raises(ValueError, match="divisible by 32"):
        DDPM(nf=12)
    with pytest.raises(ValueError, match="cannot be halved"):
        NCSNpp(image_size=12, ch_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="unconditional"):
        NCSNpp(image_size=8, nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=())(
            torch.zeros(1, 3, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long)
        )


def test_config_refuses_sigma_labels_under_our_own_parameterization():
    """NCSN++'s Fourier embedding (of log sigma) and scale_by_sigma need sigma as the label: with 'eps', refused."""
    from compose.validate import ConfigError, validate_config
    from configs.cifar10_ncsnpp_continuous import get_config

    cfg = get_config()
    cfg.model.parameterization = "eps"
    with pytest.raises(ConfigError, match="read the network's label as a noise level sigma"):
        validate_config(cfg, "train", "/nonexistent/never/created")
