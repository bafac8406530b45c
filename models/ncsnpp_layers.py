"""Layers of DDPM++ / NCSN++ (Song et al. 2021, App. H) and of the DDPM U-Net (Ho et al. 2020) in score_sde's form.

Attribute names (GroupNorm_0, Conv_0, Dense_0, NIN_0, ...) are those of score_sde_pytorch's modules, so its
checkpoints load by name; the code is this project's. Initialisation is DDPM's: variance scaling, fan_avg,
uniform ("default_init"), with the last layer of every residual branch scaled by `init_scale` (0: ~1e-10).
`skip_rescale` divides every residual sum by sqrt(2) (NCSN++ / DDPM++); plain DDPM blocks add.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .upfirdn import conv_downsample_2d, downsample_2d, upsample_2d, upsample_conv_2d

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
}


def default_init_(weight: Tensor, scale: float = 1.0, fan_axes: tuple[int, int] = (1, 0)) -> Tensor:
    """DDPM's initialiser in place: U(-a, a) with a^2 = 3 scale / mean(fan_in, fan_out) (scale 0 -> 1e-10)."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[fan_axes[0]] * receptive, weight.shape[fan_axes[1]] * receptive
    bound = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv2d(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int | None = None, init_scale=1.0):
    """A convolution with DDPM's initialisation and zero bias (padding: kernel // 2 unless given)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2 if padding is None else padding)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear layer with DDPM's initialisation and zero bias."""
    linear = nn.Linear(in_dim, out_dim)
    default_init_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm(eps 1e-6) with min(channels // 4, 32) groups (NCSN++) or a fixed count (DDPM: 32)."""
    return nn.GroupNorm(groups or min(channels // 4, 32), channels, eps=1e-6)


class NIN(nn.Module):
    """Per-pixel linear map over channels ("network in network"): y = x W + b with W [in, out]."""

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init_(torch.empty(in_dim, out_dim), init_scale, fan_axes=(0, 1)))
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[:, None, None]


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin 2 pi W s, cos 2 pi W s] of a scalar s, W ~ N(0, scale^2) fixed (Tancik et al.
    2020; NCSN++ embeds log sigma this way)."""

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        proj = s[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def timestep_embedding(timesteps: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """The Transformer's sinusoidal features [sin, cos] of `timesteps` [B] -> [B, dim] (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=timesteps.device) * -(math.log(max_positions) / (half - 1))
    )
    angles = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels with a residual (Ho et al. 2020); /sqrt(2) with skip_rescale."""

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0, groups: int | None = None):
        super().__init__()
        self.GroupNorm_0 = norm(channels, groups)
        self.NIN_0, self.NIN_1, self.NIN_2 = (NIN(channels, channels) for _ in range(3))
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hid = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(hid), self.NIN_1(hid), self.NIN_2(hid)
        weights = torch.einsum("bchw,bcij->bhwij", q, k).reshape(b, h, w, h * w) * c**-0.5
        weights = F.softmax(weights, dim=-1).reshape(b, h, w, h, w)
        out = self.NIN_3(torch.einsum("bhwij,bcij->bchw", weights, v))
        return (x + out) / math.sqrt(2.0) if self.skip_rescale else x + out


class Upsample(nn.Module):
    """x2 upsampling: nearest (+ 3x3 conv), or FIR (+ fused FIR conv) when `fir`."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, up=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv2d(in_ch, out_ch)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else upsample_2d(x, self.fir_kernel)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.Conv_0(x) if self.with_conv else x


class Downsample(nn.Module):
    """x2 downsampling: average pool or stride-2 3x3 conv (TF 'SAME' padding), or FIR (+ fused FIR conv)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, down=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv2d(in_ch, out_ch, stride=2, padding=0)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else downsample_2d(x, self.fir_kernel)
        return self.Conv_0(F.pad(x, (0, 1, 0, 1))) if self.with_conv else F.avg_pool2d(x, 2, 2)


class FIRConv2d(nn.Module):
    """A 3x3 convolution fused with FIR up- or downsampling (StyleGAN2's resampling Conv2d)."""

    def __init__(self, in_ch: int, out_ch: int, up=False, down=False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(default_init_(torch.empty(out_ch, in_ch, 3, 3)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up, self.down, self.fir_kernel = up, down, tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, self.fir_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, self.fir_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        return x + self.bias[None, :, None, None]


class Combine(nn.Module):
    """Merge the input pyramid into the features: 1x1 conv, then concatenation ('cat') or sum ('sum')."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        self.Conv_0 = conv2d(dim1, dim2, kernel=1)
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block: norm-act-conv, + Dense(act(temb)), norm-act-dropout-conv; 1x1 (NIN) or 3x3 shortcut
    when the width changes (Ho et al. 2020). `skip_rescale` gives DDPM++'s variant."""

    def __init__(
        self, act, in_ch, out_ch=None, temb_dim=None, conv_shortcut=False, dropout=0.1, skip_rescale=False,
        init_scale=0.0, groups=None,
    ):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = norm(in_ch, groups)
        self.Conv_0 = conv2d(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = norm(out_ch, groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv2d(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv2d(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.in_ch, self.out_ch = act, in_ch, out_ch
        self.conv_shortcut, self.skip_rescale = conv_shortcut, skip_rescale

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    """BigGAN's residual block as in NCSN++ (Brock et al. 2019; Song et al. 2021): up/down-sampling inside the
    block (FIR or nearest / average), 1x1 shortcut when the shape changes, residual sum / sqrt(2) by default."""

    def __init__(
        self, act, in_ch, out_ch=None, temb_dim=None, up=False, down=False, dropout=0.1, fir=False,
        fir_kernel=(1, 3, 3, 1), skip_rescale=True, init_scale=0.0,
    ):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = norm(in_ch)
        self.Conv_0 = conv2d(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv2d(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv2d(in_ch, out_ch, kernel=1)
        self.act, self.in_ch, self.out_ch, self.up, self.down = act, in_ch, out_ch, up, down
        self.fir, self.fir_kernel, self.skip_rescale = fir, tuple(fir_kernel), skip_rescale

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return upsample_2d(x, self.fir_kernel) if self.fir else F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return downsample_2d(x, self.fir_kernel) if self.fir else F.avg_pool2d(x, 2, 2)
        return x

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
