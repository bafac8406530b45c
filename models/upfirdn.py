"""FIR up/down-sampling of images with plain torch ops: upfirdn2d and the fused resampling convolutions.

StyleGAN2's resampling (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020; the upfirdn2d
op of its code), as NCSN++ uses it (Song et al. 2021, App. H): `upfirdn2d` inserts `up - 1` zeros between samples,
pads (negative pads crop), convolves with the FIR kernel and keeps every `down`-th sample. score_sde_pytorch
compiles a CUDA kernel for it at import; here it is one zero-insertion, one `F.pad` and one depthwise `F.conv2d`,
so it runs on any device and is differentiable to any order. The kernel is given as taps `k` (separable: outer(k, k)),
normalised to sum 1 (times `gain`, and times `factor^2` when upsampling so a constant image keeps its value).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fir_kernel", "upfirdn2d", "upsample_2d", "downsample_2d", "upsample_conv_2d", "conv_downsample_2d"]


def fir_kernel(k: Sequence[float], gain: float = 1.0) -> Tensor:
    """The 2-D FIR kernel outer(k, k) / sum, times `gain` (float32, CPU; `upfirdn2d` moves it)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D taps or a square 2-D array, got shape {list(k.shape)}")
    return k / k.sum() * gain


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad (pad[0] before, pad[1] after, both axes), FIR-filter, downsample [B,C,H,W]."""
    b, c, h, w = x.shape
    if up > 1:  # each sample followed by up - 1 zeros, in both axes
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1)).to(x)[None, None].expand(c, 1, *kernel.shape)  # convolution, not correlation
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample_2d(x: Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """Upsample [B, C, H, W] by `factor` with the FIR filter k (StyleGAN2's upsample_2d)."""
    kernel = fir_kernel(k, gain=factor**2)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """Downsample [B, C, H, W] by `factor` after the FIR filter k (StyleGAN2's downsample_2d)."""
    kernel = fir_kernel(k)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: Tensor, weight: Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """Fused FIR upsampling and convolution by `weight` [out, in, kh, kw]: a strided transposed convolution, then
    the filter (StyleGAN2's upsample_conv_2d, padding once)."""
    kernel = fir_kernel(k, gain=factor**2)
    kw = weight.shape[-1]
    p = (kernel.shape[0] - factor) - (kw - 1)
    # conv_transpose2d wants [in, out, kh, kw] and flipped taps to act as the convolution's adjoint.
    w_t = torch.flip(weight, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, w_t, stride=factor)
    return upfirdn2d(x, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: Tensor, weight: Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """Fused FIR filter and strided convolution by `weight` [out, in, kh, kw] (StyleGAN2's conv_downsample_2d)."""
    kernel = fir_kernel(k)
    p = (kernel.shape[0] - factor) + (weight.shape[-1] - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)
