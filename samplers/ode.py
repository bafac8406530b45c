"""Probability-flow ODE sampler: dx/dt = f - g^2 score / 2 (Song et al. 2021, Eq. 13), adaptive or fixed-step.

Adaptive methods are torchdiffeq's (dopri5 by default, rtol/atol). They never query the score outside the
interval: the end time is passed as `step_t`, so every step lands on it instead of stepping past it and
interpolating back, and the field holds t inside [t_min, T] for the initial-step probe (Hairer et al.'s
h0 guess), the only other evaluation that could leave the interval. Fixed-step methods (Euler, Heun, RK4) run
on the given grid. The same solver integrates forwards (encoding data to latents) and backwards (sampling).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchdiffeq import odeint

from sde import SDE, ScoreFn, as_time
from sde.ode_methods import FIXED_METHODS, check_ode_method

from .base import check_grid, check_option, final_denoise


def probability_flow_drift(score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor) -> Tensor:
    """The probability-flow ODE's velocity f - g^2 score / 2 (Song et al. 2021, Eq. 13)."""
    return sde.reverse(x, t, score_fn(x, t), probability_flow=True)[0]


def fixed_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float, s: float, method: str) -> Tensor:
    """One Euler (1 NFE), Heun (2 NFE, Heun 1900) or classic Runge-Kutta 4 (4 NFE) step from t to s."""

    def v(y: Tensor, time: float) -> Tensor:
        return probability_flow_drift(score_fn, sde, y, as_time(time, y))

    h = s - t
    k1 = v(x, t)
    if method == "euler":
        return x + h * k1
    if method == "heun":
        return x + h / 2 * (k1 + v(x + h * k1, s))
    k2 = v(x + h / 2 * k1, t + h / 2)
    k3 = v(x + h / 2 * k2, t + h / 2)
    k4 = v(x + h * k3, s)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def solve_probability_flow(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    callback=None,
) -> Tensor:
    """Integrate the probability-flow ODE along ts (increasing or decreasing) from x at ts[0] to ts[-1].

    Fixed-step methods step through every time in ts; adaptive methods use only the end points.
    """
    check_ode_method(method)
    times = [float(t) for t in ts]
    if method in FIXED_METHODS:
        for i in range(len(times) - 1):
            x = fixed_step(score_fn, sde, x, times[i], times[i + 1], method)
            if callback is not None:
                callback({"i": i, "t": times[i + 1], "x": x})
        return x
    lo, hi = min(times[0], times[-1]), max(times[0], times[-1])

    def field(t: Tensor, y: Tensor) -> Tensor:
        return probability_flow_drift(score_fn, sde, y, as_time(t.clamp(lo, hi), y))

    span = torch.tensor([times[0], times[-1]], dtype=torch.float64, device=x.device)
    options = {"step_t": span[1:]}
    x = odeint(field, x, span.to(x.dtype), method=method, rtol=rtol, atol=atol, options=options)[-1]
    if callback is not None:
        callback({"i": 0, "t": times[-1], "x": x})
    return x


def ode_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Probability-flow ODE sampler from T to t_min (Song et al. 2021, Sec. 4.3); deterministic given x_T."""
    del generator  # deterministic
    for key, value in (("method", method), ("rtol", rtol), ("atol", atol)):
        check_option(key, value)
    check_grid(sde, ts)
    x = solve_probability_flow(score_fn, sde, x, ts, method, rtol, atol, callback)
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
