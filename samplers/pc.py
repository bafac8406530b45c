"""Reverse-SDE samplers: predictors, the predictor-corrector loop and ancestral sampling (Song et al. 2021, Alg. 1-4).

A predictor moves x from time t to the next grid time s < t; a corrector then runs Langevin steps at s
(Alg. 1: predictor first, then M corrector steps at the new time). Every predictor pairs with every corrector
and every SDE, because each step reads only the SDE's exact marginals and transitions:
- Euler-Maruyama: x + (f - g^2 score) dt + g sqrt(|dt|) noise with dt = s - t < 0 (`sde.reverse`).
- reverse diffusion: undo the exact forward step x_t = x_s + f_i + G_i noise (`sde.discretize`):
  x - f_i + G_i^2 score + G_i noise (Song et al. 2021, Eq. 46).
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
    f_i, big_g = sde.discretize(x, s, t)
    big_g = append_dims(big_g, x.ndim)
    return x - f_i + big_g**2 * score_fn(x, t) + big_g * randn_like(x, generator)


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
