"""Bits per dimension of 8-bit images from a continuous model density, with honest error bars (Theis et al. 2016).

Uniform dequantisation. Pixels k in {0, ..., 255}^D are spread over unit bins, k + u with u ~ U[0, 1)^D, and the
model's data live in an affine image of that cube: y = scale * (k + u) + shift (this project: y = 2 (k + u)/256 - 1
in [-1, 1)^D, scale = 2/256). For any model density p_model(y), Jensen's inequality over u gives the bound

    -log P(k) = -log int_{[0,1)^D} p_model(y(k + u)) scale^D du  <=  E_u[-log p_model(y)] - D log(scale),

since dy = scale du per dimension. In bits per dimension (D ln 2 nats per bit-dimension):

    bits/dim = (E_u[-log p_model(y)] - D log(scale)) / (D ln 2) = -E_u[log p_model(y)] / (D ln 2) - log2(scale).

With scale = 2/256, -log2(scale) = 7: bits/dim = nll / (D ln 2) + 7 (score_sde's `offset = 7 - inverse_scaler(-1)`).
Sanity check: the uniform density on the cube, p_model = 2^-D on [-1, 1)^D, gives 1 + 7 = 8 bits/dim.
A discrete NLL (e.g. the variational bound with a discretised decoder) needs no Jacobian: bits/dim = nll/(D ln 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PIXEL_LEVELS = 256  # 8-bit data
MODEL_SCALE = 2 / PIXEL_LEVELS  # dy/du of the map y = 2 (pixel + u)/256 - 1 used by data.datasets.dequantize_and_scale


def bits_per_dim(logp_model_nats: Tensor | float, num_dims: int, scale: float = MODEL_SCALE) -> Tensor | float:
    """Dequantised bits/dim = (-log p_model(y) - D log(scale)) / (D ln 2) (Theis et al. 2016; Ho et al. 2019).

    Args:
        logp_model_nats: log-density of the model at the dequantised, scaled data y, per image, in nats.
        num_dims: D, the number of pixels (times channels) per image.
        scale: dy/du, the Jacobian of the map from dequantised pixels k + u in [0, 256) to model space
            (2/256 for [-1, 1), 1/256 for [0, 1)).
    """
    if isinstance(num_dims, bool) or int(num_dims) != num_dims or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    return (-logp_model_nats - num_dims * math.log(scale)) / (num_dims * math.log(2))


def discrete_bits_per_dim(nll_nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Bits/dim of a discrete negative log-likelihood (or its bound) in nats: nll / (D ln 2)."""
    if isinstance(num_dims, bool) or int(num_dims) != num_dims or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    return nll_nats / (num_dims * math.log(2))


def check_pixels(images: Tensor) -> Tensor:
    """8-bit pixels as uint8, or a ValueError naming the offending dtype or range (expected integers 0..255)."""
    if not isinstance(images, Tensor):
        images = torch.as_tensor(images)
    if images.is_floating_point() or images.is_complex() or images.dtype == torch.bool:
        raise ValueError(f"pixels must be integers in 0..{PIXEL_LEVELS - 1}, got dtype {images.dtype}")
    if images.numel() and (int(images.min()) < 0 or int(images.max()) > PIXEL_LEVELS - 1):
        raise ValueError(
            f"pixels must lie in 0..{PIXEL_LEVELS - 1}, got range {int(images.min())}..{int(images.max())}"
        )
    return images.to(torch.uint8)


def check_data(x: Tensor) -> None:
    """ValueError unless x is a floating batch [B, *D] of finite values (the ODE likelihood and the bound take data,
    not pixels; a NaN would otherwise surface only as a solver's step underflow or a NaN bound)."""
    if not isinstance(x, Tensor) or not torch.is_floating_point(x) or x.ndim < 2 or x.shape[0] < 1:
        what = f"{x.dtype} tensor of shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point batch [B, *D] with B >= 1, got a {what}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"x has {bad} non-finite values (NaN or inf); the likelihood needs finite data")


def mean_and_stderr(values: Tensor) -> tuple[float, float]:
    """Mean over examples and its standard error std / sqrt(n) (0 for one example) of values [N]."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    stderr = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else 0.0
    return values.mean().item(), stderr


def probe_stderr(samples: Tensor) -> float:
    """Standard error of the overall mean due to the probes and dequantisation draws alone, from samples [N, M]
    (M = draws x probes per image): sqrt(sum_i var_i / M) / N."""
    samples = torch.as_tensor(samples, dtype=torch.float64).flatten(1)
    n, m = samples.shape
    if m < 2:
        return float("nan")
    return math.sqrt(samples.var(1, unbiased=True).sum().item() / m) / n
