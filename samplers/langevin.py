"""Langevin correctors and annealed Langevin dynamics (Song & Ermon 2019, Alg. 1; Song et al. 2021, Alg. 4-5).

One Langevin step targets p_t: x <- x + step * score + sqrt(2 step) noise.

Step sizes. The Langevin corrector picks step = 2 alpha_i (snr ||noise|| / ||score||)^2 (Song et al. 2021,
Alg. 4), alpha_i = 1 - beta_i on VP-type SDEs and 1 on VE. Here alpha_i is read from the exact transition of
the grid step that ends at t: alpha_i = a^2 with a = alpha_t' / alpha_t (t' the previous, larger grid time),
which is DDPM's 1 - beta_i on VP and the DDPM chain, the same mean-decay factor on sub-VP (where score_sde's
corrector indexes `sde.alphas`, which sub-VP lacks, and crashes) and 1 on VE.
score_sde averages ||noise|| and ||score|| over the batch, so one sample's step depends on the rest of the
batch and the sampled distribution on the batch size (`per_sample_step=False` keeps that rule). Using each
sample's OWN ||score|| instead is worse: a state-dependent step h(x) makes Langevin dynamics sample
p(x) / h(x), here p(x) ||score(x)||^2, far from p in low dimension (it piles samples away from the modes).
So `per_sample_step=True` puts the expected norms into the same rule, E||noise||^2 = d and
E||score||^2 <= d / sigma_t^2 (the Fisher information of the added Gaussian noise, tight once the noise
dominates): step = 2 alpha_i (snr sigma_t)^2, the same for every sample and independent of the batch. This is
score_sde's annealed-Langevin corrector step, offered under its own name too ("ald").
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time

from .base import check_grid, check_option, final_denoise, randn_like


def langevin_step(x: Tensor, score: Tensor, step: Tensor, noise: Tensor) -> Tensor:
    """x + step * score + sqrt(2 step) noise, with a step [B] per sample (Roberts & Tweedie 1996)."""
    return x + append_dims(step, x.ndim) * score + append_dims((2 * step).sqrt(), x.ndim) * noise


def snr_step_size(
    sde: SDE, t: Tensor, score: Tensor, noise: Tensor, alpha: Tensor, snr: float, per_sample_step: bool
) -> Tensor:
    """Langevin step 2 alpha (snr ||noise|| / ||score||)^2 [B] (Song et al. 2021, Alg. 4): batch-averaged norms,
    or (per_sample_step) their expectations d and d / sigma_t^2, i.e. 2 alpha (snr sigma_t)^2."""
    if per_sample_step:
        return 2 * alpha * (snr * sde.marginal(t)[1]) ** 2
    score_norm = score.flatten(1).norm(dim=1).mean()
    noise_norm = noise.flatten(1).norm(dim=1).mean()
    return 2 * alpha * (snr * noise_norm / score_norm) ** 2 * torch.ones_like(t)


def langevin_corrector(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    alpha: Tensor,
    generator: torch.Generator | None,
    snr: float,
    n_steps: int,
    per_sample_step: bool,
) -> Tensor:
    """Langevin corrector at time t with the signal-to-noise step rule (Song et al. 2021, Alg. 4)."""
    for _ in range(n_steps):
        score = score_fn(x, t)
        noise = randn_like(x, generator)
        x = langevin_step(x, score, snr_step_size(sde, t, score, noise, alpha, snr, per_sample_step), noise)
    return x


def annealed_langevin_corrector(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    alpha: Tensor,
    generator: torch.Generator | None,
    snr: float,
    n_steps: int,
    per_sample_step: bool = True,
) -> Tensor:
    """Annealed-Langevin corrector, step 2 alpha (snr sigma_t)^2 (score_sde's AnnealedLangevinDynamics)."""
    del per_sample_step  # the step depends on t only: the same for every sample
    _, sigma = sde.marginal(t)
    step = 2 * alpha * (snr * sigma) ** 2
    for _ in range(n_steps):
        x = langevin_step(x, score_fn(x, t), step, randn_like(x, generator))
    return x


def no_corrector(score_fn, sde, x, t, alpha, generator, snr, n_steps, per_sample_step=True) -> Tensor:
    """No corrector: x unchanged, no score evaluation."""
    return x


CORRECTORS = {"langevin": langevin_corrector, "ald": annealed_langevin_corrector, "none": no_corrector}


def check_ald_step(eps: float, last_level: float) -> None:
    """Raise ValueError unless eps < 4 s_L^2: Langevin steps eps s_i^2 / s_L^2 on noise of variance s_i^2 then
    stay below 4 s_i^2, the stability limit of the Langevin step on a Gaussian (beyond it the chain diverges)."""
    if eps >= 4 * last_level**2:
        raise ValueError(
            f"ALD step eps = {eps:g} is unstable on this grid: its last noise level sigma/alpha = "
            f"{last_level:.3g} needs eps < 4 (sigma/alpha)^2 = {4 * last_level**2:.3g} (NCSN's 2e-5 "
            "suits a last level of 0.01); lower eps or raise t_min"
        )


def ald_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    eps: float = 2e-5,
    n_steps: int = 5,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Annealed Langevin dynamics over the noise levels of the grid (Song & Ermon 2019, Alg. 1).

    Every grid time is one noise level (steps + 1 levels). Each SDE here is VE in y = x / alpha_t with noise
    level sigma_t / alpha_t (Karras et al. 2022, Sec. 4), so Alg. 1 runs on y: step size
    eps * (sigma_t / alpha_t)^2 / (sigma_L / alpha_L)^2 and y carried unchanged to the next level. In x that is
    the step alpha_t^2 times larger and x rescaled by alpha_t' / alpha_t between levels; on VE (alpha = 1) it is
    Song & Ermon's algorithm verbatim. The final denoising is Tweedie's at the last level (Song & Ermon 2020).
    """
    check_option("eps", eps)
    check_option("n_steps", n_steps)
    check_grid(sde, ts)
    ts = ts.to(x.device, torch.float64)
    alpha, sigma = sde.marginal(ts)
    level = sigma / alpha  # VE-equivalent noise level of each grid time
    check_ald_step(eps, float(level[-1]))
    step_y = eps * (level / level[-1]) ** 2
    for i in range(len(ts)):
        if i > 0:  # carry y = x / alpha over to the next level
            x = x * float(alpha[i] / alpha[i - 1])
        t = as_time(float(ts[i]), x)
        step = as_time(float(step_y[i] * alpha[i] ** 2), x)  # the y-step in x units
        # Langevin steps at level i: x + step/2 score + sqrt(step) noise, Alg. 1's alpha_i = step.
        for _ in range(n_steps):
            x = langevin_step(x, score_fn(x, t), step / 2, randn_like(x, generator))
        if callback is not None:
            callback({"i": i, "t": ts[i], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
