"""Pieces every sampler shares: noise draws, Tweedie's denoiser, the exact posterior step and grid checks.

Each SDE here has Gaussian marginals p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) and exact transitions
p(x_t | x_s) = N(a x_s, v^2 I) (`sde.marginal`, `sde.transition`). From these two facts follow Tweedie's
x0_hat = E[x_0 | x_t] = (x_t + sigma_t^2 score) / alpha_t and the Gaussian posterior q(x_s | x_t, x_0), from
which one ancestral step is built for any SDE and any pair of times s < t (Ho et al. 2020, Eqs. 6-7).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time

VARIANCES = ("beta", "posterior")  # ancestral step variance: DDPM's sigma_t^2 = beta_t, or beta-tilde_t


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A N(0, I) draw shaped like x, from the given generator (on x's device and dtype)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def tweedie(sde: SDE, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
    """Tweedie's denoiser x0_hat = (x + sigma_t^2 score) / alpha_t = E[x_0 | x_t] (Efron 2011)."""
    alpha, sigma = sde.marginal(t)
    return (x + append_dims(sigma**2, x.ndim) * score) / append_dims(alpha, x.ndim)


def final_denoise(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float | Tensor, denoise: bool) -> Tensor:
    """The usual last step: x0_hat at the grid's last time (one extra score evaluation), or x unchanged."""
    if not denoise:
        return x
    t = as_time(t, x)
    return tweedie(sde, x, t, score_fn(x, t))


def posterior_coefficients(sde: SDE, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q(x_s | x_t, x_0) = N(c_x x_t + c_0 x_0, var) for s < t: returns (c_x, c_0, var), each [B].

    With x_t = a x_s + v noise and x_s = alpha_s x_0 + sigma_s noise': c_x = a sigma_s^2 / sigma_t^2,
    c_0 = alpha_s v^2 / sigma_t^2, var = sigma_s^2 v^2 / sigma_t^2 (Ho et al. 2020, Eq. 7 for VP).
    """
    a, v = sde.transition(s, t)
    alpha_s, sigma_s = sde.marginal(s)
    _, sigma_t = sde.marginal(t)
    return a * sigma_s**2 / sigma_t**2, alpha_s * v**2 / sigma_t**2, sigma_s**2 * v**2 / sigma_t**2


def ancestral_step(sde: SDE, x: Tensor, t: Tensor, s: Tensor, score: Tensor, noise: Tensor,
                   variance: str = "beta") -> Tensor:
    """One ancestral step t -> s < t: x_s ~ q(x_s | x_t, x0_hat) with Tweedie's x0_hat (Ho et al. 2020, Alg. 2).

    variance 'posterior' uses beta-tilde = sigma_s^2 v^2 / sigma_t^2 (for VE this is SMLD's ancestral step,
    Song et al. 2021, Eq. 47); 'beta' uses the forward step's v^2 (DDPM's sigma_t^2 = beta_t).
    """
    c_x, c_0, var = posterior_coefficients(sde, s, t)
    if variance == "beta":
        var = sde.transition(s, t)[1] ** 2
    x0_hat = tweedie(sde, x, t, score)
    mean = append_dims(c_x, x.ndim) * x + append_dims(c_0, x.ndim) * x0_hat
    return mean + append_dims(var.sqrt(), x.ndim) * noise


def check_grid(sde: SDE, ts: Tensor) -> None:
    """Raise ValueError unless ts is a strictly decreasing grid in [0, T] ending where sigma_t > 0."""
    ts = torch.as_tensor(ts)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"a time grid needs at least 2 times (1 step), got shape {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("the time grid must decrease strictly from T to t_min")
    if float(ts[0]) > sde.T or float(ts[-1]) < 0:
        raise ValueError(f"the time grid must lie in [0, T = {sde.T}], got [{float(ts[-1])}, {float(ts[0])}]")
    if float(sde.marginal(ts[-1:].double())[1]) <= 0:
        raise ValueError(f"the {sde.name} SDE has sigma_t = 0 at t = {float(ts[-1])}: the score does not exist "
                         "there; stop the grid at some t_min > 0")
