"""DDPM-style noise-prediction U-Net for small square images (MNIST-sized 28x28 by default).

Architecture of Ho et al., "Denoising Diffusion Probabilistic Models", 2020 (as used by Song et al., "Score-Based
Generative Modeling through Stochastic Differential Equations", 2021, for the DDPM++ baseline): a residual
encoder/decoder with skip connections, self-attention at low resolution, and a noise (and optional class) embedding
injected into every residual block. Interface: ``net(x, noise_label, y=None) -> eps`` with ``noise_label =
log(sigma_t / alpha_t)`` of shape [B] and ``y`` class labels in [0, num_classes] (``num_classes`` = null label).

The defaults (channels 16 -> 64 -> 64 at resolutions 28 -> 14 -> 7, one residual block per level, attention at
7x7, ~1.06M parameters) were picked for ~30 minutes of CPU training on MNIST: almost all the compute of a small
U-Net is spent in the 3x3 convolutions at full resolution, so the top level is kept thin and the capacity sits at
14x14 and 7x7. Per fwd+bwd+Adam step on a batch of 64 at fp32 this costs ~0.69 CPU-seconds on one core versus
~1.04 for the classic 32 -> 64 -> 64 layout (``base_channels=32, channel_mult=(1, 2, 2)``, 1.17M parameters).
Decoder upsampling convolutions map straight to the next level's width, again to save full-resolution compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.embeddings import ConditionEmbedding
from models.layers import AttentionBlock, Downsample, ResBlock, Upsample, check_image_input, group_norm

__all__ = ["UNet", "check_unet_geometry"]


def check_unet_geometry(image_size: int, channel_mult: Sequence[int], attn_resolutions: Sequence[int]) -> list[int]:
    """Validate that ``image_size`` halves ``len(channel_mult) - 1`` times; return the resolution of each level."""
    if len(channel_mult) < 1 or any(int(m) < 1 for m in channel_mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of positive integers, got {tuple(channel_mult)}")
    num_down = len(channel_mult) - 1
    factor = 2**num_down
    if image_size < 1 or image_size % factor != 0:
        raise ValueError(
            f"image_size {image_size} cannot be halved {num_down} times (len(channel_mult)={len(channel_mult)}); "
            f"allowed: multiples of {factor}"
        )
    resolutions = [image_size // 2**i for i in range(len(channel_mult))]
    unknown = sorted(set(attn_resolutions) - set(resolutions))
    if unknown:
        raise ValueError(f"attn_resolutions {unknown} are not U-Net resolutions; allowed: {resolutions}")
    return resolutions


class UNet(nn.Module):
    """Noise-prediction U-Net: ``forward(x, noise_label, y=None) -> eps`` with the shape of ``x``.

    Level ``i`` has ``base_channels * channel_mult[i]`` channels at resolution ``image_size / 2**i``; each level has
    ``num_res_blocks`` residual blocks in the encoder and ``num_res_blocks + 1`` in the decoder, followed by
    self-attention at resolutions listed in ``attn_resolutions``. ``num_classes > 0`` adds a class embedding with
    an extra null label ``num_classes`` (used when ``y`` is None). ``emb_dim`` is the width of the noise/label
    embedding; ``num_groups=None`` picks GroupNorm groups automatically; ``resample_with_conv=False`` uses
    average pooling / plain nearest upsampling instead of convolutions.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 28,
        base_channels: int = 16,
        channel_mult: Sequence[int] = (1, 4, 4),
        num_res_blocks: int = 1,
        attn_resolutions: Sequence[int] = (7,),
        num_heads: int = 2,
        dropout: float = 0.1,
        num_classes: int = 0,
        emb_dim: int = 128,
        num_groups: int | None = None,
        resample_with_conv: bool = True,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be a positive integer, got {base_channels}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        resolutions = check_unet_geometry(image_size, channel_mult, attn_resolutions)
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        block_kw = dict(emb_dim=emb_dim, dropout=dropout, num_groups=num_groups)

        self.embed = ConditionEmbedding(emb_dim=emb_dim, num_classes=num_classes)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Encoder: every module output is pushed on the skip stack.
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch = base_channels
        for level, (mult, res) in enumerate(zip(channel_mult, resolutions)):
            for _ in range(num_res_blocks):
                out_ch = base_channels * int(mult)
                layers = [ResBlock(in_channels=ch, out_channels=out_ch, **block_kw)]
                ch = out_ch
                if res in attn_resolutions:
                    layers.append(AttentionBlock(channels=ch, num_heads=num_heads, num_groups=num_groups))
                self.down.append(nn.ModuleList(layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(channels=ch, with_conv=resample_with_conv)]))
                skip_channels.append(ch)

        self.mid = nn.ModuleList(
            [
                ResBlock(in_channels=ch, **block_kw),
                AttentionBlock(channels=ch, num_heads=num_heads, num_groups=num_groups),
                ResBlock(in_channels=ch, **block_kw),
            ]
        )

        # Decoder: every res block consumes one skip; each level but the top ends in an upsample.
        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            mult, res = channel_mult[level], resolutions[level]
            for i in range(num_res_blocks + 1):
                out_ch = base_channels * int(mult)
                layers = [ResBlock(in_channels=ch + skip_channels.pop(), out_channels=out_ch, **block_kw)]
                ch = out_ch
                if res in attn_resolutions:
                    layers.append(AttentionBlock(channels=ch, num_heads=num_heads, num_groups=num_groups))
                if level != 0 and i == num_res_blocks:
                    up_ch = base_channels * int(channel_mult[level - 1]) if resample_with_conv else ch
                    layers.append(Upsample(channels=ch, out_channels=up_ch, with_conv=resample_with_conv))
                    ch = up_ch
                self.up.append(nn.ModuleList(layers))
        assert not skip_channels

        self.norm_out = group_norm(ch, num_groups)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, emb)
        return h

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise eps [B, C, H, W] from ``x`` [B, C, H, W], ``noise_label`` [B] and labels ``y`` [B]."""
        check_image_input(x, self.in_channels, self.image_size)
        emb = self.embed(noise_label, y, batch_size=x.shape[0])
        h = self.conv_in(x)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, emb)
            skips.append(h)
        h = self._run(self.mid, h, emb)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))
