"""Reverse-SDE samplers: predictors, the predictor-corrector loop and ancestral sampling (Song et al. 2021, Alg. 1-4).

A predictor moves x from time t to the next grid time s < t; a corrector then runs Langevin steps at s
(Alg. 1: predictor first, then M corrector steps at the new time). Every predictor pairs with every corrector
and every SDE, because each step reads only the SDE's exact marginals and transitions:
- Euler-Maruyama: x + (f - g^2 score) dt + g sqrt(|dt|) noise with dt = s - t < 0 (`sde.reverse`).
- reverse diffusion: undo the exact forward step x_t = x_s + f_i + G_i noise (`sde.discretize`):
  x - f_i + G_i^2 score + G_i noise (Song et al. 2021, Eq. 46).
- score_sde's reverse diffusion: the same form with score_sde_pytorch's f_i, G_i (its DDPM / SMLD ladders with as
  many levels as steps, evaluated at the step's start), kept to reproduce that code's numbers.
- ancestral: x_s ~ q(x_s | x_t, x0_hat), DDPM's step on VP and SMLD's on VE (`base.ancestral_step`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time

from .base import ancestral_step, check_choice, check_grid, check_option, final_denoise, randn_like
from .langevin import CORRECTORS


def euler_maruyama_predictor(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Euler-Maruyama step of the reverse-time SDE from t to s (Song et al. 2021, Eq. 6)."""
    drift, g = sde.reverse(x, t, score_fn(x, t))
    dt = append_dims(s - t, x.ndim)  # negative
    return x + drift * dt + append_dims(g, x.ndim) * (-dt).sqrt() * randn_like(x, generator)


def reverse_diffusion_predictor(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Reverse-diffusion step x - f_i + G_i^2 score + G_i noise (Song et al. 2021, Eq. 46)."""
    return reverse_diffusion_step(score_fn, x, t, *sde.discretize(x, s, t), generator)


def reverse_diffusion_step(
    score_fn: ScoreFn, x: Tensor, t: Tensor, f_i: Tensor, big_g: Tensor, generator: torch.Generator | None
) -> Tensor:
    """x - f_i + G_i^2 score(x, t) + G_i noise: the reverse of the forward step x_t = x_s + f_i + G_i noise
    (Song et al. 2021, Eq. 46), for any f_i [B, *D] and G_i [B]."""
    big_g = append_dims(big_g, x.ndim)
    return x - f_i + big_g**2 * score_fn(x, t) + big_g * randn_like(x, generator)


def score_sde_discretize(sde: SDE, x: Tensor, t: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """score_sde_pytorch's `discretize(x, t)` on an n-level ladder (Song et al. 2021, App. B): level i = floor(t (n-1)
    / T) in float32 as it computes it, tau_i = i T / (n - 1); DDPM's step on a variance-preserving path with linear
    betas (f = (sqrt(1 - b) - 1) x, G = sqrt(b), b = beta(tau_i) / n), SMLD's on a variance-exploding one (alpha = 1:
    f = 0, G^2 = sigma(tau_i)^2 - sigma(tau_{i-1})^2, 0 below level 0), Euler-Maruyama's elsewhere (f = f(x, t) / n,
    G = g(t) / sqrt(n), as its sub-VP). Returns (f [B, *D], G [B])."""
    big_t = float(sde.T)
    level = (t.float() * (n - 1) / big_t).long().to(t.dtype)  # score_sde: (t * (N - 1) / T).long()
    tau = level * big_t / (n - 1)
    alpha, sigma = sde.marginal(t)
    if bool(torch.all(alpha == 1)):  # variance exploding: SMLD's ladder
        sigma_i = sde.marginal(tau)[1]
        below = torch.where(level > 0, sde.marginal((level - 1).clamp(min=0) * big_t / (n - 1))[1], 0.0)
        return torch.zeros_like(x), (sigma_i**2 - below**2).sqrt()
    linear_beta = all(hasattr(sde, k) for k in ("beta", "beta_min", "beta_max"))  # score_sde's VP: a linear beta(t)
    if linear_beta and bool(torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha), atol=1e-6)):
        b = sde.beta(tau) / n  # DDPM's ladder: beta_i = beta(tau_i) / n
        return append_dims((1 - b).sqrt() - 1, x.ndim) * x, b.sqrt()
    f, g = sde.sde(x, t)
    return f / n, g / n**0.5


def score_sde_reverse_diffusion_predictor(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    generator: torch.Generator | None,
    n_levels: int = 1000,
) -> Tensor:
    """score_sde_pytorch's ReverseDiffusionPredictor: x - f_i + G_i^2 score + G_i noise with its ladder's f_i, G_i
    at the step's start (`score_sde_discretize`, n = the number of grid times), not our exact transition."""
    return reverse_diffusion_step(score_fn, x, t, *score_sde_discretize(sde, x, t, n_levels), generator)


def ancestral_predictor(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    generator: torch.Generator | None,
    variance: str = "forward",
) -> Tensor:
    """Ancestral step x_s ~ q(x_s | x_t, x0_hat) (Ho et al. 2020, Alg. 2; Song et al. 2021, Eq. 47)."""
    return ancestral_step(sde, x, t, s, score_fn(x, t), randn_like(x, generator), variance)


def no_predictor(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None
) -> Tensor:
    """No predictor: x unchanged, no score evaluation (corrector-only sampling)."""
    return x


PREDICTORS = {
    "euler_maruyama": euler_maruyama_predictor,
    "reverse_diffusion": reverse_diffusion_predictor,
    "score_sde_reverse_diffusion": score_sde_reverse_diffusion_predictor,
    "ancestral": ancestral_predictor,
    "none": no_predictor,
}


def pc_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    per_sample_step: bool = True,
    variance: str = "forward",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Predictor-corrector sampler (Song et al. 2021, Alg. 1) over the decreasing grid ts.

    NFE: (1 if a predictor) + n_corrector_steps (if a corrector), per step; + 1 for the final denoising.
    """
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    for key, value in (("snr", snr), ("n_corrector_steps", n_corrector_steps), ("variance", variance)):
        check_option(key, value)
    if predictor == corrector == "none":
        raise ValueError("predictor 'none' with corrector 'none' does nothing; choose at least one")
    check_grid(sde, ts)
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    extra = {"variance": variance} if predictor == "ancestral" else {}
    if predictor == "score_sde_reverse_diffusion":
        extra = {"n_levels": len(ts)}  # score_sde's ladder: one level per grid time (its grid: linspace(T, eps, N))
        top = torch.full((1,), float(sde.T), dtype=torch.float64)
        f_top, g_top = score_sde_discretize(sde, torch.ones(1, 1, dtype=torch.float64), top, len(ts))
        if not (bool(torch.isfinite(f_top).all()) and bool(torch.isfinite(g_top).all())):
            raise ValueError(
                f"score_sde's ladder with N = {len(ts)} levels has a step beyond the path at its top level (a DDPM "
                f"beta >= 1: its code gives NaN there); use more steps"
            )
    ts = ts.to(x.device, torch.float64)
    for i in range(len(ts) - 1):
        t, s = as_time(float(ts[i]), x), as_time(float(ts[i + 1]), x)
        # Predictor step t -> s.
        x = predict(score_fn, sde, x, t, s, generator, **extra)
        # Corrector steps at s; Langevin's alpha_i = a^2 of the exact transition s -> t (1 - beta_i on VP).
        alpha_i = sde.transition(s, t)[0] ** 2
        x = correct(
            score_fn, sde, x, s, alpha_i, generator, snr=snr, n_steps=n_corrector_steps, per_sample_step=per_sample_step
        )
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)


def ancestral_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    variance: str = "forward",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Ancestral sampling: DDPM's reverse chain on VP (Ho et al. 2020, Alg. 2), SMLD's on VE (Song et al. 2021).

    On the DDPM SDE with the grid t = N/N, (N-1)/N, ..., 1/N and denoise=True this is Alg. 2 exactly: its
    noise-free last step from x_1 is Tweedie's x0_hat at t = 1/N.
    """
    return pc_sample(
        score_fn,
        sde,
        x,
        ts,
        predictor="ancestral",
        corrector="none",
        variance=variance,
        denoise=denoise,
        generator=generator,
        callback=callback,
    )
