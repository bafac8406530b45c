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
- score_sde's ancestral: DDPM's / SMLD's step on score_sde_pytorch's ladders (its AncestralSamplingPredictor).

Two loops. `loop="predictor_first"` (the default) is the paper's Alg. 1: from each grid time a predictor step to the
next, then the corrector there, and the final Tweedie denoising. `loop="score_sde"` is score_sde_pytorch's
`get_pc_sampler`: at each of the grid's N = steps + 1 times t (its `linspace(T, eps, N)` is the uniform grid), the
corrector at t first, then a predictor step from t with its dt = -T / N, and the last predictor step's noise-free
mean as the sample (its `denoise=True`); N (1 + M) score evaluations, none for a final denoising. With its
predictors (euler_maruyama, score_sde_reverse_diffusion, score_sde_ancestral, none), its Langevin alpha (its
ladder's 1 - beta_i, `score_sde_alpha`) and per_sample_step=False (its batch-averaged step), it gives that code's
numbers on the same noise (tests/test_pc_score_sde_loop.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time

from .base import ancestral_step, check_choice, check_grid, check_option, final_denoise, randn_like
from .langevin import CORRECTORS


def add_noise(mean: Tensor, scale: Tensor, generator: torch.Generator | None, noise: bool = True) -> Tensor:
    """mean + scale [B] * z: a predictor's step. noise=False returns the mean, still drawing z (as score_sde's
    predictors do before returning x_mean), so the generator's stream is the same either way."""
    z = randn_like(mean, generator)
    return mean + append_dims(scale, mean.ndim) * z if noise else mean


def euler_maruyama_predictor(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None, noise: bool = True
) -> Tensor:
    """Euler-Maruyama step of the reverse-time SDE from t to s (Song et al. 2021, Eq. 6)."""
    drift, g = sde.reverse(x, t, score_fn(x, t))
    dt = s - t  # negative
    return add_noise(x + drift * append_dims(dt, x.ndim), g * (-dt).sqrt(), generator, noise)


def reverse_diffusion_predictor(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None, noise: bool = True
) -> Tensor:
    """Reverse-diffusion step x - f_i + G_i^2 score + G_i noise (Song et al. 2021, Eq. 46)."""
    return reverse_diffusion_step(score_fn, x, t, *sde.discretize(x, s, t), generator, noise)


def reverse_diffusion_step(
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    f_i: Tensor,
    big_g: Tensor,
    generator: torch.Generator | None,
    noise: bool = True,
) -> Tensor:
    """x - f_i + G_i^2 score(x, t) + G_i noise: the reverse of the forward step x_t = x_s + f_i + G_i noise
    (Song et al. 2021, Eq. 46), for any f_i [B, *D] and G_i [B]."""
    return add_noise(x - f_i + append_dims(big_g, x.ndim) ** 2 * score_fn(x, t), big_g, generator, noise)


def score_sde_ladder(sde: SDE, t: Tensor, n: int) -> tuple[str | None, Tensor, Tensor]:
    """score_sde_pytorch's discrete ladder at t with n levels: (kind, level i = floor(t (n-1) / T) computed in float32
    as it does, tau_i = i T / (n - 1)). kind is "ve" (alpha = 1: SMLD's sigma ladder), "vp" (a linear beta(t) with
    alpha^2 + sigma^2 = 1: DDPM's b_i = beta(tau_i) / n), "subvp" (a linear beta otherwise: its sub-VP) or None."""
    big_t = float(sde.T)
    level = (t.float() * (n - 1) / big_t).long().to(t.dtype)  # score_sde: (t * (N - 1) / T).long()
    tau = level * big_t / (n - 1)
    alpha, sigma = sde.marginal(t)
    if bool(torch.all(alpha == 1)):
        return "ve", level, tau
    if all(hasattr(sde, k) for k in ("beta", "beta_min", "beta_max")):
        unit = bool(torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha), atol=1e-6))
        return ("vp" if unit else "subvp"), level, tau
    return None, level, tau


def score_sde_alpha(sde: SDE, t: Tensor, n: int) -> Tensor:
    """The Langevin corrector's alpha_i in score_sde's loop: its `sde.alphas[level]` = 1 - beta(tau_i) / n on VP
    (and on sub-VP, where its own corrector crashes: sub-VP has no `alphas` there), 1 on VE; on other paths a^2 of
    the exact transition over its step [t - T / n, t] (our rule)."""
    kind, _, tau = score_sde_ladder(sde, t, n)
    if kind in ("vp", "subvp"):
        return 1 - sde.beta(tau) / n
    if kind == "ve":
        return torch.ones_like(t)
    return sde.transition((t - float(sde.T) / n).clamp_min(0), t)[0] ** 2


def score_sde_discretize(sde: SDE, x: Tensor, t: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """score_sde_pytorch's `discretize(x, t)` on an n-level ladder (Song et al. 2021, App. B): level i = floor(t (n-1)
    / T) in float32 as it computes it, tau_i = i T / (n - 1); DDPM's step on a variance-preserving path with linear
    betas (f = (sqrt(1 - b) - 1) x, G = sqrt(b), b = beta(tau_i) / n), SMLD's on a variance-exploding one (alpha = 1:
    f = 0, G^2 = sigma(tau_i)^2 - sigma(tau_{i-1})^2, 0 below level 0), Euler-Maruyama's elsewhere (f = f(x, t) / n,
    G = g(t) / sqrt(n), as its sub-VP). Returns (f [B, *D], G [B])."""
    kind, level, tau = score_sde_ladder(sde, t, n)
    if kind == "ve":  # variance exploding: SMLD's ladder
        sigma_i, below = smld_ladder(sde, level, tau, n)
        return torch.zeros_like(x), (sigma_i**2 - below**2).sqrt()
    if kind == "vp":
        b = sde.beta(tau) / n  # DDPM's ladder: beta_i = beta(tau_i) / n
        return append_dims((1 - b).sqrt() - 1, x.ndim) * x, b.sqrt()
    f, g = sde.sde(x, t)
    return f / n, g / n**0.5


def smld_ladder(sde: SDE, level: Tensor, tau: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """score_sde's VE levels sigma_i = sigma(tau_i) and sigma_{i-1} (0 below level 0)."""
    below = torch.where(level > 0, sde.marginal((level - 1).clamp(min=0) * float(sde.T) / (n - 1))[1], 0.0)
    return sde.marginal(tau)[1], below


def score_sde_reverse_diffusion_predictor(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    generator: torch.Generator | None,
    n_levels: int = 1000,
    noise: bool = True,
) -> Tensor:
    """score_sde_pytorch's ReverseDiffusionPredictor: x - f_i + G_i^2 score + G_i noise with its ladder's f_i, G_i
    at the step's start (`score_sde_discretize`, n = the number of grid times), not our exact transition."""
    return reverse_diffusion_step(score_fn, x, t, *score_sde_discretize(sde, x, t, n_levels), generator, noise)


def score_sde_ancestral_predictor(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    generator: torch.Generator | None,
    n_levels: int = 1000,
    noise: bool = True,
) -> Tensor:
    """score_sde_pytorch's AncestralSamplingPredictor on its ladders (at the step's start, n = the number of grid
    times): DDPM's (x + b_i score) / sqrt(1 - b_i) + sqrt(b_i) z on VP, SMLD's x + (sigma_i^2 - sigma_{i-1}^2) score
    + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z on VE; it has no other paths."""
    kind, level, tau = score_sde_ladder(sde, t, n_levels)
    if kind not in ("vp", "ve"):  # before the score evaluation (pc_sample refuses it earlier still)
        raise ValueError(f"predictor 'score_sde_ancestral' needs a VP or VE path (score_sde's ladders), got {sde!r}")
    score = score_fn(x, t)
    if kind == "vp":
        b = sde.beta(tau) / n_levels
        return add_noise((x + append_dims(b, x.ndim) * score) / append_dims((1 - b).sqrt(), x.ndim), b.sqrt(),
                         generator, noise)  # fmt: skip
    sigma_i, below = smld_ladder(sde, level, tau, n_levels)
    jump = sigma_i**2 - below**2
    var = torch.where(sigma_i > 0, below**2 * jump / sigma_i**2, 0.0)  # level 0 of a ladder from sigma = 0 (EDM's)
    return add_noise(x + append_dims(jump, x.ndim) * score, var.sqrt(), generator, noise)


def ancestral_predictor(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    generator: torch.Generator | None,
    variance: str = "forward",
    noise: bool = True,
) -> Tensor:
    """Ancestral step x_s ~ q(x_s | x_t, x0_hat) (Ho et al. 2020, Alg. 2; Song et al. 2021, Eq. 47)."""
    z = randn_like(x, generator)
    return ancestral_step(sde, x, t, s, score_fn(x, t), z if noise else torch.zeros_like(z), variance)


def no_predictor(
    score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None, noise: bool = True
) -> Tensor:
    """No predictor: x unchanged, no score evaluation (corrector-only sampling)."""
    return x


PREDICTORS = {
    "euler_maruyama": euler_maruyama_predictor,
    "reverse_diffusion": reverse_diffusion_predictor,
    "score_sde_reverse_diffusion": score_sde_reverse_diffusion_predictor,
    "ancestral": ancestral_predictor,
    "score_sde_ancestral": score_sde_ancestral_predictor,
    "none": no_predictor,
}
# The predictors score_sde's loop takes: its own (ours step to a grid time s, which its last step lacks).
SCORE_SDE_LOOP_PREDICTORS = ("euler_maruyama", "score_sde_reverse_diffusion", "score_sde_ancestral", "none")


def check_pc_combination(sde: SDE, predictor: str, loop: str, n: int) -> None:
    """Raise ValueError for a predictor that cannot run in this loop or on this path with n grid times: score_sde's
    loop takes only its own predictors; its ancestral step has ladders for VP and VE only; its DDPM ladder needs
    b_i = beta(tau_i) / n < 1 at the top level."""
    if loop == "score_sde" and predictor not in SCORE_SDE_LOOP_PREDICTORS:
        raise ValueError(
            f"predictor {predictor!r} does not run in loop 'score_sde'; valid predictors there: "
            f"{list(SCORE_SDE_LOOP_PREDICTORS)} (score_sde's own)"
        )
    if predictor not in ("score_sde_reverse_diffusion", "score_sde_ancestral"):
        return
    top = torch.full((1,), float(sde.T), dtype=torch.float64)
    if predictor == "score_sde_ancestral" and score_sde_ladder(sde, top, n)[0] not in ("vp", "ve"):
        raise ValueError(f"predictor 'score_sde_ancestral' needs a VP or VE path (score_sde's ladders), got {sde!r}")
    f_top, g_top = score_sde_discretize(sde, torch.ones(1, 1, dtype=torch.float64), top, n)
    if not (bool(torch.isfinite(f_top).all()) and bool(torch.isfinite(g_top).all())):
        raise ValueError(
            f"score_sde's ladder with N = {n} levels has a step beyond the path at its top level (a DDPM "
            f"beta >= 1: its code gives NaN there); use more steps"
        )


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
    loop: str = "predictor_first",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Predictor-corrector sampler (Song et al. 2021, Alg. 1) over the decreasing grid ts; loop="score_sde" runs
    score_sde_pytorch's loop instead (module docstring).

    NFE: (1 if a predictor) + n_corrector_steps (if a corrector), per step; + 1 for the final denoising. With
    loop="score_sde": the same per grid time (steps + 1 of them), no final denoising.
    """
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    for key, value in (("snr", snr), ("n_corrector_steps", n_corrector_steps), ("variance", variance), ("loop", loop)):
        check_option(key, value)
    if predictor == corrector == "none":
        raise ValueError("predictor 'none' with corrector 'none' does nothing; choose at least one")
    check_grid(sde, ts)
    check_pc_combination(sde, predictor, loop, len(ts))
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    extra = {"variance": variance} if predictor == "ancestral" else {}
    if predictor in ("score_sde_reverse_diffusion", "score_sde_ancestral"):
        extra = {"n_levels": len(ts)}  # score_sde's ladder: one level per grid time (its grid: linspace(T, eps, N))
    ts = ts.to(x.device, torch.float64)
    options = {"snr": snr, "n_steps": n_corrector_steps, "per_sample_step": per_sample_step}
    if loop == "score_sde":
        return score_sde_loop(score_fn, sde, x, ts, predict, correct, extra, options, denoise, generator, callback)
    for i in range(len(ts) - 1):
        t, s = as_time(float(ts[i]), x), as_time(float(ts[i + 1]), x)
        # Predictor step t -> s.
        x = predict(score_fn, sde, x, t, s, generator, **extra)
        # Corrector steps at s; Langevin's alpha_i = a^2 of the exact transition s -> t (1 - beta_i on VP).
        alpha_i = sde.transition(s, t)[0] ** 2
        x = correct(score_fn, sde, x, s, alpha_i, generator, **options)
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)


def score_sde_loop(score_fn, sde, x, ts, predict, correct, extra, options, denoise, generator, callback) -> Tensor:
    """score_sde_pytorch's `pc_sampler` loop over the N = len(ts) times: the corrector at t (alpha_i from its ladder,
    `score_sde_alpha`), then the predictor from t with dt = -T / N; the last predictor step's mean when denoise."""
    n = len(ts)
    for i in range(n):
        t = as_time(float(ts[i]), x)
        x = correct(score_fn, sde, x, t, score_sde_alpha(sde, t, n), generator, **options)
        s = t - float(sde.T) / n  # its Euler-Maruyama dt; below 0 at the last time when eps < T / N (never read there)
        x = predict(score_fn, sde, x, t, s, generator, noise=not (denoise and i == n - 1), **extra)
        if callback is not None:
            callback({"i": i, "t": ts[i + 1] if i + 1 < n else s[0], "x": x})
    return x


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
