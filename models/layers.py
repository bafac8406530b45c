"""Building blocks of the noise-prediction U-Net: residual blocks, self-attention, down/up-sampling.

The blocks follow the DDPM U-Net of Ho et al., "Denoising Diffusion Probabilistic Models", 2020 (a PixelCNN++ /
Wide-ResNet backbone), with the adaptive-GroupNorm (scale-shift) conditioning of Dhariwal & Nichol, "Diffusion
Models Beat GANs on Image Synthesis", 2021. Residual branches end in zero-initialised layers so every block starts
as the identity. Attention works on any number of spatial dimensions; convolutions are 2-D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "default_num_groups",
    "group_norm",
    "zero_module",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "check_image_input",
]


def default_num_groups(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """Largest group count <= max_groups dividing ``channels`` with at least ``min_group_size`` channels per group."""
    if channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels}")
    upper = max(1, min(max_groups, channels // min_group_size))
    return next(g for g in range(upper, 0, -1) if channels % g == 0)


def group_norm(channels: int, num_groups: int | None = None, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm over ``channels``; ``num_groups=None`` picks :func:`default_num_groups`, else it must divide."""
    if num_groups is None:
        num_groups = default_num_groups(channels)
    elif num_groups < 1 or channels % num_groups != 0:
        raise ValueError(
            f"GroupNorm num_groups={num_groups} does not divide channels={channels}; allowed: a positive divisor "
            f"of {channels}, or None for automatic ({default_num_groups(channels)})"
        )
    return nn.GroupNorm(num_groups, channels, eps=eps)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def check_image_input(x: torch.Tensor, channels: int, image_size: int) -> None:
    """Raise ValueError unless ``x`` has shape [B, channels, image_size, image_size]."""
    expected = (channels, image_size, image_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"expected x of shape [B, {channels}, {image_size}, {image_size}], got {list(x.shape)}")


def _broadcast_to(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape per-channel ``v`` [B, C] to [B, C, 1, ..., 1] matching the rank of ``x``."""
    return v.reshape(*v.shape, *([1] * (x.ndim - v.ndim)))


class ResBlock(nn.Module):
    """Residual block: GN-SiLU-conv, embedding injection (scale-shift or add), GN-SiLU-dropout-conv, plus skip."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        emb_dim: int,
        dropout: float = 0.0,
        scale_shift: bool = True,
        num_groups: int | None = None,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.scale_shift = scale_shift
        self.norm0 = group_norm(in_channels, num_groups)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels * (2 if scale_shift else 1))
        self.norm1 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` [B, C_in, H, W] conditioned on ``emb`` [B, emb_dim]."""
        h = self.conv0(F.silu(self.norm0(x)))
        e = _broadcast_to(self.emb_proj(F.silu(emb)).to(h.dtype), h)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm1(h) * (1 + scale) + shift
        else:
            h = self.norm1(h + e)
        h = self.conv1(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with GroupNorm and a zero-initialised residual."""

    def __init__(self, *, channels: int, num_heads: int = 1, num_groups: int | None = None):
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must be a positive divisor of channels={channels}")
        self.num_heads = num_heads
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the spatial positions of ``x`` [B, C, *spatial]; ``emb`` is accepted and ignored."""
        b, c = x.shape[:2]
        h = self.norm(x).flatten(2)  # [B, C, N]
        q, k, v = self.qkv(h).reshape(b, 3 * self.num_heads, c // self.num_heads, -1).transpose(-1, -2).chunk(3, 1)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, C/heads]
        out = out.transpose(-1, -2).reshape(b, c, -1)
        return x + self.proj(out).reshape(x.shape)


class Downsample(nn.Module):
    """Halve the spatial size with a stride-2 3x3 convolution (``with_conv=True``) or 2x2 average pooling."""

    def __init__(self, *, channels: int, with_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Downsample ``x`` [B, C, H, W] -> [B, C, H/2, W/2]; ``emb`` is accepted and ignored."""
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Double the spatial size with nearest-neighbour upsampling, followed by a 3x3 convolution if ``with_conv``.

    With ``with_conv`` the convolution may change the channel count to ``out_channels`` (saving compute at the
    higher resolution); without it ``out_channels`` must equal ``channels``.
    """

    def __init__(self, *, channels: int, out_channels: int | None = None, with_conv: bool = True):
        super().__init__()
        out_channels = out_channels or channels
        if not with_conv and out_channels != channels:
            raise ValueError(f"Upsample without conv cannot change channels {channels} -> {out_channels}")
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Upsample ``x`` [B, C, H, W] -> [B, C, 2H, 2W]; ``emb`` is accepted and ignored."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x
