"""NCSN++ and DDPM++ (Song et al., "Score-Based Generative Modeling through SDEs", 2021, App. H), one network.

The options are score_sde_pytorch's `ncsnpp` model's, with its defaults: DDPM++ is resblock_type="biggan",
embedding_type="positional", fir=False, progressive="none"; NCSN++ adds FIR resampling (`fir`, `fir_kernel`),
progressive_input="residual" (an input pyramid merged into the encoder), embedding_type="fourier" (Gaussian
Fourier features of log sigma) and scale_by_sigma=True (the output divided by sigma: a score). Modules are kept in
one `all_modules` list in construction order, as score_sde does, so its state dicts load by name; the forward
pass walks that list in the same order.

Interface: ``net(x, time_cond) -> output`` with score_sde's conventions (the score wrapper maps them, see
models/score.py): `time_cond` is 999 t (VP, sub-VP) or sigma (VE); `x` is in [-1, 1] if `centered`, else [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .ncsnpp_layers import (
    ACTIVATIONS,
    AttnBlock,
    Combine,
    Downsample,
    GaussianFourierProjection,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
    conv2d,
    dense,
    norm,
    timestep_embedding,
)

__all__ = ["NCSNpp", "NCSNPP_CHOICES", "check_ncsnpp_options", "noise_ladder"]

NCSNPP_CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
    "nonlinearity": tuple(ACTIVATIONS),
}


def check_ncsnpp_options(**options) -> None:
    """Raise ValueError naming the first option outside NCSNPP_CHOICES."""
    for key, value in options.items():
        if key in NCSNPP_CHOICES and str(value).lower() not in NCSNPP_CHOICES[key]:
            raise ValueError(f"unknown {key} {value!r}; valid: {list(NCSNPP_CHOICES[key])}")


def noise_ladder(sigma_min: float, sigma_max: float, num_scales: int) -> Tensor:
    """score_sde's `sigmas` buffer: num_scales noise levels geometric from sigma_max down to sigma_min (float64)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64))


def _norm_act_conv(modules, h: Tensor, act: nn.Module) -> Tensor:
    """conv(act(norm(h))) with the next two modules of the iterator (norm first)."""
    h = act(next(modules)(h))
    return next(modules)(h)


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ U-Net (Song et al. 2021, App. H) with score_sde's options and parameter names."""

    def __init__(
        self,
        *,
        image_size: int = 32,
        num_channels: int = 3,
        centered: bool = True,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "none",
        progressive_combine: str = "sum",
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
        init_scale: float = 0.0,
        scale_by_sigma: bool = False,
        nonlinearity: str = "swish",
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        check_ncsnpp_options(
            resblock_type=resblock_type, progressive=progressive, progressive_input=progressive_input,
            progressive_combine=progressive_combine, embedding_type=embedding_type, nonlinearity=nonlinearity,
        )  # fmt: skip
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        if image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size {image_size} cannot be halved {len(ch_mult) - 1} times (ch_mult {ch_mult})")
        self.act = act = ACTIVATIONS[nonlinearity.lower()]()
        self.register_buffer("sigmas", noise_ladder(sigma_min, sigma_max, num_scales))
        self.nf, self.num_res_blocks, self.num_resolutions = nf, num_res_blocks, len(ch_mult)
        self.attn_resolutions, self.conditional, self.centered = tuple(attn_resolutions), conditional, centered
        self.skip_rescale, self.resblock_type = skip_rescale, resblock_type.lower()
        self.progressive, self.progressive_input = progressive.lower(), progressive_input.lower()
        self.embedding_type, self.scale_by_sigma = embedding_type.lower(), scale_by_sigma
        self.image_size, self.in_channels, self.num_classes = image_size, num_channels, 0
        combine = progressive_combine.lower()

        def attn(ch):
            return AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        def resblock(in_ch, out_ch=None, up=False, down=False):
            common = dict(act=act, in_ch=in_ch, out_ch=out_ch, temb_dim=4 * nf, dropout=dropout,
                          skip_rescale=skip_rescale, init_scale=init_scale)  # fmt: skip
            if self.resblock_type == "ddpm":
                return ResnetBlockDDPM(**common)
            return ResnetBlockBigGAN(**common, up=up, down=down, fir=fir, fir_kernel=fir_kernel)

        modules: list[nn.Module] = []
        # Noise embedding: Fourier features of log sigma, or sinusoidal features of the label; then a 2-layer MLP.
        if self.embedding_type == "fourier":
            modules.append(GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
        if conditional:
            modules += [dense(2 * nf if self.embedding_type == "fourier" else nf, 4 * nf), dense(4 * nf, 4 * nf)]
        if self.progressive == "output_skip":
            self.pyramid_upsample = Upsample(num_channels, fir=fir, fir_kernel=fir_kernel)
        if self.progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(num_channels, fir=fir, fir_kernel=fir_kernel)

        # Encoder.
        modules.append(conv2d(num_channels, nf))
        skips, in_ch, pyramid_ch = [nf], nf, num_channels
        for level, res in enumerate(resolutions):
            for _ in range(num_res_blocks):
                modules.append(resblock(in_ch, nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
                if res in self.attn_resolutions:
                    modules.append(attn(in_ch))
                skips.append(in_ch)
            if level != len(resolutions) - 1:
                if self.resblock_type == "ddpm":
                    modules.append(Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(resblock(in_ch, down=True))
                if self.progressive_input == "input_skip":
                    modules.append(Combine(pyramid_ch, in_ch, method=combine))
                    in_ch *= 2 if combine == "cat" else 1
                elif self.progressive_input == "residual":
                    modules.append(Downsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = in_ch
                skips.append(in_ch)

        # Middle.
        in_ch = skips[-1]
        modules += [resblock(in_ch), attn(in_ch), resblock(in_ch)]

        # Decoder (attention once per level, after its blocks; an output pyramid if `progressive`).
        pyramid_ch = 0
        for level in reversed(range(len(resolutions))):
            for _ in range(num_res_blocks + 1):
                modules.append(resblock(in_ch + skips.pop(), nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
            if resolutions[level] in self.attn_resolutions:
                modules.append(attn(in_ch))
            if self.progressive != "none":
                first = level == len(resolutions) - 1
                if self.progressive == "output_skip":
                    modules += [norm(in_ch), conv2d(in_ch, num_channels, init_scale=init_scale)]
                    pyramid_ch = num_channels
                elif first:  # residual
                    modules += [norm(in_ch), conv2d(in_ch, in_ch)]
                    pyramid_ch = in_ch
                else:
                    modules.append(Upsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = in_ch
            if level != 0:
                if self.resblock_type == "ddpm":
                    modules.append(Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(resblock(in_ch, up=True))
        assert not skips
        if self.progressive != "output_skip":
            modules += [norm(in_ch), conv2d(in_ch, num_channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(modules)

    def _rescaled_sum(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

    def forward(self, x: Tensor, time_cond: Tensor, y: Tensor | None = None) -> Tensor:
        """The network output [B, C, H, W] (eps-like for VP labels; the score if scale_by_sigma) at `time_cond` [B]."""
        if y is not None:
            raise ValueError("NCSN++ / DDPM++ here are unconditional: class labels are not accepted")
        modules = iter(self.all_modules)
        # Noise embedding.
        if self.embedding_type == "fourier":
            used_sigmas = time_cond
            temb = next(modules)(torch.log(used_sigmas))
        else:
            used_sigmas = self.sigmas[time_cond.long()]
            temb = timestep_embedding(time_cond, self.nf)
        if self.conditional:
            temb = next(modules)(temb)
            temb = next(modules)(self.act(temb))
        else:
            temb = None
        if not self.centered:
            x = 2 * x - 1.0

        # Encoder.
        input_pyramid = x if self.progressive_input != "none" else None
        hs = [next(modules)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(modules)(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(modules)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                h = next(modules)(hs[-1]) if self.resblock_type == "ddpm" else next(modules)(hs[-1], temb)
                if self.progressive_input == "input_skip":
                    input_pyramid = self.pyramid_downsample(input_pyramid)
                    h = next(modules)(input_pyramid, h)
                elif self.progressive_input == "residual":
                    input_pyramid = h = self._rescaled_sum(next(modules)(input_pyramid), h)
                hs.append(h)

        # Middle.
        h = next(modules)(hs[-1], temb)
        h = next(modules)(h)
        h = next(modules)(h, temb)

        # Decoder.
        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(modules)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in self.attn_resolutions:
                h = next(modules)(h)
            if self.progressive != "none":
                first = level == self.num_resolutions - 1
                if self.progressive == "output_skip":
                    pyramid_h = _norm_act_conv(modules, h, self.act)
                    pyramid = pyramid_h if first else self.pyramid_upsample(pyramid) + pyramid_h
                elif first:
                    pyramid = _norm_act_conv(modules, h, self.act)
                else:
                    pyramid = h = self._rescaled_sum(next(modules)(pyramid), h)
            if level != 0:
                h = next(modules)(h) if self.resblock_type == "ddpm" else next(modules)(h, temb)
        assert not hs

        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = _norm_act_conv(modules, h, self.act)
        assert next(modules, None) is None
        if self.scale_by_sigma:
            h = h / used_sigmas.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h
