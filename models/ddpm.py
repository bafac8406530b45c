"""The DDPM U-Net of Ho et al., "Denoising Diffusion Probabilistic Models", 2020 (App. B), in score_sde's form.

A PixelCNN++ / Wide-ResNet backbone: `num_res_blocks` residual blocks per level, self-attention at the resolutions in
`attn_resolutions`, stride-2 convolutions down and nearest + conv up, GroupNorm(32) everywhere, sinusoidal
embedding of the label through a 2-layer MLP. At CIFAR-10 size (nf 128, ch_mult (1, 2, 2, 2), 2 blocks, attention at
16) it has 35.7M parameters. Two decoder layouts: score_sde's `ddpm` model applies attention once per level, after
its blocks (`attn_every_block=False`, the default, whose state dicts load by name); Ho et al.'s TensorFlow code and
diffusers' UNet2DModel apply it after every decoder block (`attn_every_block=True`).

Interface: ``net(x, labels) -> eps`` with `labels` = 999 t (score_sde's continuous VP) or the chain step index.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .ncsnpp import noise_ladder
from .ncsnpp_layers import (
    ACTIVATIONS,
    AttnBlock,
    Downsample,
    ResnetBlockDDPM,
    Upsample,
    conv2d,
    dense,
    norm,
    timestep_embedding,
)

__all__ = ["DDPM"]

GROUPS = 32  # DDPM's GroupNorm: 32 groups at every width


class DDPM(nn.Module):
    """DDPM U-Net (Ho et al. 2020) with score_sde's parameter names."""

    def __init__(
        self,
        *,
        image_size: int = 32,
        num_channels: int = 3,
        centered: bool = True,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        scale_by_sigma: bool = False,
        nonlinearity: str = "swish",
        attn_every_block: bool = False,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        if nonlinearity.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; valid: {list(ACTIVATIONS)}")
        bad = [w for w in (nf * m for m in ch_mult) if w % GROUPS]
        if bad:
            raise ValueError(f"DDPM's GroupNorm needs widths divisible by {GROUPS}; nf * ch_mult gives {bad}")
        if image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size {image_size} cannot be halved {len(ch_mult) - 1} times (ch_mult {ch_mult})")
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        self.act = act = ACTIVATIONS[nonlinearity.lower()]()
        self.register_buffer("sigmas", noise_ladder(sigma_min, sigma_max, num_scales))
        self.nf, self.num_res_blocks, self.num_resolutions = nf, num_res_blocks, len(ch_mult)
        self.attn_resolutions, self.conditional, self.centered = tuple(attn_resolutions), conditional, centered
        self.scale_by_sigma, self.attn_every_block = scale_by_sigma, attn_every_block
        self.image_size, self.in_channels, self.num_classes = image_size, num_channels, 0

        def resblock(in_ch, out_ch=None):
            return ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=4 * nf, dropout=dropout, groups=GROUPS)

        def attn(ch):
            return AttnBlock(ch, groups=GROUPS)

        modules: list[nn.Module] = [dense(nf, 4 * nf), dense(4 * nf, 4 * nf)] if conditional else []
        # Encoder.
        modules.append(conv2d(num_channels, nf))
        skips, in_ch = [nf], nf
        for level, res in enumerate(resolutions):
            for _ in range(num_res_blocks):
                modules.append(resblock(in_ch, nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
                if res in self.attn_resolutions:
                    modules.append(attn(in_ch))
                skips.append(in_ch)
            if level != len(resolutions) - 1:
                modules.append(Downsample(in_ch, with_conv=resamp_with_conv))
                skips.append(in_ch)
        # Middle.
        modules += [resblock(in_ch), attn(in_ch), resblock(in_ch)]
        # Decoder.
        for level in reversed(range(len(resolutions))):
            for _ in range(num_res_blocks + 1):
                modules.append(resblock(in_ch + skips.pop(), nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
                if attn_every_block and resolutions[level] in self.attn_resolutions:
                    modules.append(attn(in_ch))
            if not attn_every_block and resolutions[level] in self.attn_resolutions:
                modules.append(attn(in_ch))
            if level != 0:
                modules.append(Upsample(in_ch, with_conv=resamp_with_conv))
        assert not skips
        modules += [norm(in_ch, GROUPS), conv2d(in_ch, num_channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x: Tensor, labels: Tensor, y: Tensor | None = None) -> Tensor:
        """The noise prediction [B, C, H, W] at `labels` [B]."""
        if y is not None:
            raise ValueError("this DDPM U-Net is unconditional: class labels are not accepted")
        modules = iter(self.all_modules)
        temb = None
        if self.conditional:
            temb = next(modules)(timestep_embedding(labels, self.nf))
            temb = next(modules)(self.act(temb))
        h = x if self.centered else 2 * x - 1.0
        # Encoder.
        hs = [next(modules)(h)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(modules)(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(modules)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(next(modules)(hs[-1]))
        # Middle.
        h = next(modules)(hs[-1], temb)
        h = next(modules)(h)
        h = next(modules)(h, temb)
        # Decoder.
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(modules)(torch.cat([h, hs.pop()], dim=1), temb)
                if self.attn_every_block and h.shape[-1] in self.attn_resolutions:
                    h = next(modules)(h)
            if not self.attn_every_block and h.shape[-1] in self.attn_resolutions:
                h = next(modules)(h)
            if level != 0:
                h = next(modules)(h)
        assert not hs
        h = self.act(next(modules)(h))
        h = next(modules)(h)
        assert next(modules, None) is None
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h
