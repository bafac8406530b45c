"""Linear multistep (variable-step Adams-Bashforth) sampler in EDM's variables: k-diffusion's sample_lms and
diffusers' LMSDiscreteScheduler, on every Gaussian path.

In y = x / alpha_t against the noise level s = sigma_t / alpha_t the probability-flow ODE is dy/ds = (y - D(y; s)) / s
for every path (Karras et al. 2022, Eq. 4 with s(t) = alpha_t). Each step s_i -> s_{i+1} adds
sum_j c_j d_{i-j}, where d_k is that slope at the k-th grid level and c_j = int_{s_i}^{s_{i+1}} L_j(s) ds integrates
the Lagrange basis polynomial through the last `order` levels (Adams-Bashforth on an uneven grid; Hairer, Norsett &
Wanner I, Sec. III.5). The first steps use the levels they have (order min(i + 1, order)). One call per step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sde import SDE, ScoreFn

from .base import check_grid, check_option, denoise_at_level, final_denoise

# Gauss-Legendre nodes and weights on [-1, 1]: exact for the Lagrange basis (degree <= 3) of order <= 4.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(3)


def adams_bashforth_weights(levels: list[float], a: float, b: float) -> list[float]:
    """c_j = int_a^b L_j(s) ds for the Lagrange basis through `levels` (newest first), exactly."""
    s = 0.5 * (b - a) * _NODES + 0.5 * (b + a)
    weights = []
    for j, level_j in enumerate(levels):
        basis = np.ones_like(s)
        for k, level_k in enumerate(levels):
            if k != j:
                basis *= (s - level_k) / (level_j - level_k)
        weights.append(float(0.5 * (b - a) * np.dot(_WEIGHTS, basis)))
    return weights


def lms_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 4,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Adams-Bashforth of order `order` (1-4) in EDM's (y, sigma~) along the grid ts. NFE = steps (+1 denoise).
    k-diffusion and diffusers end with a multistep step to sigma = 0; ours ends at ts[-1] with Tweedie's
    denoising (docs/samplers.md)."""
    del generator  # deterministic
    check_option("lms_order", order)
    check_grid(sde, ts)
    times = ts.to(torch.float64).tolist()
    alpha = sde.marginal(ts.to(torch.float64))[0].tolist()
    levels = torch.exp(-sde.logsnr(ts.to(torch.float64))).tolist()
    y, slopes = x / alpha[0], []
    for i in range(len(times) - 1):
        slopes = [(y - denoise_at_level(score_fn, sde, y, levels[i], times[i])) / levels[i], *slopes][:order]
        recent = [levels[i - j] for j in range(len(slopes))]  # newest first, as the slopes
        weights = adams_bashforth_weights(recent, levels[i], levels[i + 1])
        y = y + sum(w * d for w, d in zip(weights, slopes))
        if callback is not None:  # a callback may change info["x"] (in place or not): y follows it
            info = {"i": i, "t": ts[i + 1], "x": alpha[i + 1] * y}
            callback(info)
            y = info["x"] / alpha[i + 1]
    return final_denoise(score_fn, sde, alpha[-1] * y, times[-1], denoise)
