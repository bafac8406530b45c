"""DDIM (Song et al. 2021a): the deterministic (eta = 0) or stochastic denoising-diffusion implicit sampler.

It reads only x_t = alpha_t x_0 + sigma_t noise, so it serves every Gaussian path: each step moves the data
prediction x0_hat = `sde.denoise` to time s and re-noises it with the predicted noise noise_hat = -sigma_t score
and, for eta > 0, fresh noise of eta^2 times the posterior variance. eta = 1 is the ancestral step with the
posterior variance; DPM-Solver++(1) is DDIM with eta = 0 (samplers/dpm_solver.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time

from .base import check_grid, check_option, final_denoise, randn_like


def ddim_step(
    sde: SDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    score: Tensor,
    eta: float,
    generator: torch.Generator | None,
    noise: Tensor | None = None,
) -> Tensor:
    """DDIM step t -> s: alpha_s x0_hat + sqrt(sigma_s^2 - c^2) noise_hat + c noise (Song et al. 2021a, Eq. 12).

    c^2 = eta^2 times the posterior variance of q(x_s | x_t, x_0); eta = 1 is the ancestral step. The fresh noise
    is drawn from `generator` unless given.
    """
    alpha_s, sigma_s = sde.marginal(s)
    _, sigma_t = sde.marginal(t)
    x0_hat = sde.denoise(x, t, score)
    noise_hat = -append_dims(sigma_t, x.ndim) * score
    c2 = eta**2 * sde.posterior(s, t)[2]
    x = append_dims(alpha_s, x.ndim) * x0_hat + append_dims((sigma_s**2 - c2).clamp_min(0).sqrt(), x.ndim) * noise_hat
    if eta == 0:
        return x
    return x + append_dims(c2.sqrt(), x.ndim) * (randn_like(x, generator) if noise is None else noise)


def ddim_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    eta: float = 0.0,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """DDIM sampler, deterministic for eta = 0 (Song et al. 2021a, Alg. in Sec. 4.1). NFE = steps (+1 denoise)."""
    check_option("eta", eta)
    check_grid(sde, ts)
    ts = ts.to(x.device, torch.float64)
    for i in range(len(ts) - 1):
        t, s = as_time(float(ts[i]), x), as_time(float(ts[i + 1]), x)
        x = ddim_step(sde, x, t, s, score_fn(x, t), eta, generator)
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
