"""Singlestep DPM-Solver-1, -2, -3 (Lu et al. 2022a, Alg. 1 and 2) and DPM-Solver++(2S, 3S) (Lu et al. 2022b):
each step from lambda_s to lambda_t = lambda_s + h makes its own k - 1 intermediate network calls, at lambda_s + r1 h
(r1 = 1/2 for order 2; r1 = 1/3, r2 = 2/3 for order 3: evenly in lambda, the paper's), and forgets them afterwards;
k calls per step. Lu et al.'s code spaces them evenly in the variable of its time grid instead, so on its
time_uniform grid evenly in t (r from the times t_s + (t_t - t_s) j / k): `inner="t"` here.

Written in the data-prediction form (x0_hat, x / sigma moving by int e^{lambda} x0_hat dlambda); the noise form
(eps, x / alpha moving by -int e^{-lambda} eps dlambda) is the same arithmetic with (alpha, sigma, lambda, x0_hat)
replaced by (sigma, alpha, -lambda, eps), as in samplers/dpm_solver.py. The two forms of the correction
(`solver_type`) are Lu et al.'s: "midpoint" (their "dpmsolver" type: DPM-Solver-2's - (1 / 2 r1) alpha phi_1 D and
DPM-Solver-3's + (1 / r2) alpha phi_2 D) and "heun" (their "taylor" type, the Taylor terms integrated exactly:
+ alpha phi_2 D1 - alpha phi_3 D2 with D2 = 2 (D1_1 - D1_0) / (r2 - r1), i.e. 2 phi_3 on h^2 c2: exact at third
order, unlike the multistep libraries' coefficient).

DPM-Solver-fast (Lu et al. 2022a; their code's method="singlestep") spends an exact budget of N calls:
K = N // 3 + 1 steps of orders 3, ..., 3 then (2, 1), (1) or (2) for N mod 3 = 0, 1, 2 (order 2: N / 2 steps of
order 2, or (N - 1) / 2 and one of order 1), the K steps evenly in lambda as in the paper; on another grid of N steps
their code instead takes k grid steps per step of order k, calling at the grid's times (`fast_schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sde import SDE

from .grids import logsnr_grid

Coef = Callable[[float], tuple[float, float]]  # lambda -> (alpha, sigma) in the form's roles
Pred = Callable[[Tensor, float], Tensor]  # (x, lambda) -> the prediction there (one network call)


def singlestep_update(
    x: Tensor,
    m0: Tensor,
    lam_s: float,
    lam_t: float,
    order: int,
    solver_type: str,
    coef: Coef,
    pred: Pred,
    r: tuple[float, ...] | None = None,
) -> Tensor:
    """One singlestep DPM-Solver(++) step of `order` from lam_s to lam_t, given the prediction m0 at lam_s. r: the
    intermediate points' fractions of the step in lambda (default: the paper's 1/2, or 1/3 and 2/3)."""
    return _singlestep(x, m0, lam_s, lam_t, order, solver_type, coef, pred, r, lower=False)[0]


def _second_order(x_t: Tensor, m0: Tensor, m1: Tensor, r1: float, a_t: float, h: float, solver_type: str) -> Tensor:
    """DPM-Solver-2's correction of the first-order x_t by the prediction m1 at lam_s + r1 h (Lu et al. 2022a,
    Alg. 1; "heun": the line through m0 and m1 integrated exactly, their code's "taylor" type)."""
    phi_1 = math.expm1(-h)
    if solver_type == "midpoint":
        return x_t - (0.5 / r1 * a_t * phi_1) * (m1 - m0)
    return x_t + (a_t * (phi_1 / h + 1.0) / r1) * (m1 - m0)


def _singlestep(x, m0, lam_s, lam_t, order, solver_type, coef, pred, r, lower: bool):
    """(x_t of `order`, and with lower=True the order - 1 result from the same calls: DPM-Solver-1 inside
    DPM-Solver-2, DPM-Solver-2 at r1 inside DPM-Solver-3, as DPM-Solver-12 / 23 compare them)."""
    h = lam_t - lam_s
    a_t, s_t = coef(lam_t)
    s_s = coef(lam_s)[1]
    phi_1 = math.expm1(-h)
    x_t = (s_t / s_s) * x - (a_t * phi_1) * m0
    if order == 1:
        return x_t, None
    r1 = r[0] if r else (0.5 if order == 2 else 1.0 / 3.0)
    a_1, s_1 = coef(lam_s + r1 * h)
    m1 = pred((s_1 / s_s) * x - (a_1 * math.expm1(-r1 * h)) * m0, lam_s + r1 * h)
    if order == 2:
        return _second_order(x_t, m0, m1, r1, a_t, h, solver_type), x_t
    r2 = r[1] if r else 2.0 / 3.0
    a_2, s_2 = coef(lam_s + r2 * h)
    phi_12 = math.expm1(-r2 * h)
    phi_22 = phi_12 / (r2 * h) + 1.0
    x_2 = (s_2 / s_s) * x - (a_2 * phi_12) * m0 + (r2 / r1 * a_2 * phi_22) * (m1 - m0)
    m2 = pred(x_2, lam_s + r2 * h)
    phi_2 = phi_1 / h + 1.0
    x_low = _second_order(x_t, m0, m1, r1, a_t, h, solver_type) if lower else None
    if solver_type == "midpoint":
        return x_t + (a_t * phi_2 / r2) * (m2 - m0), x_low
    d1_0, d1_1 = (m1 - m0) / r1, (m2 - m0) / r2
    d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
    d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
    return x_t + (a_t * phi_2) * d1 - (a_t * (phi_2 / h - 0.5)) * d2, x_low


def adaptive_solve(
    x: Tensor,
    t_start: float,
    t_end: float,
    order: int,
    solver_type: str,
    sign: float,
    logsnr: Callable[[float], float],
    t_from_logsnr: Callable[[float], float],
    coef: Coef,
    pred: Pred,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    theta: float = 0.9,
    t_err: float = 1e-5,
) -> tuple[Tensor, float, int]:
    """DPM-Solver-12 (order 2) / DPM-Solver-23 (order 3) with adaptive steps in lambda (Lu et al. 2022a;
    their code's dpm_solver_adaptive): each try from lambda_s makes `order` calls (the first one reused
    after a rejection), giving DPM-Solver-k and its embedded DPM-Solver-(k - 1); E = the largest per-sample RMS of
    (x_k - x_{k-1}) / max(atol, rtol max(|x_{k-1}|, |x_prev|)); the step is accepted if E <= 1, and the next h is
    min(theta h E^(-1/k), lambda_end - lambda_s). `sign` maps lambda to the form's variable (-1: noise form).
    Returns (x at t_end, the last time reached, the number of prediction calls); a non-finite error estimate or a
    step below 1e-10 in lambda raises FloatingPointError instead of looping."""
    lam_s, lam_end = logsnr(t_start), logsnr(t_end)
    t_s, h, x_prev, m0, calls = t_start, h_init, x, None, 0

    def counted(z: Tensor, lam_form: float) -> Tensor:
        nonlocal calls
        calls += 1
        return pred(z, lam_form)

    while abs(t_s - t_end) > t_err:
        t_t = t_from_logsnr(lam_s + h)
        lam_t = logsnr(t_t)
        if m0 is None:
            m0 = counted(x, sign * lam_s)
        x_high, x_low = _singlestep(x, m0, sign * lam_s, sign * lam_t, order, solver_type, coef, counted, None, True)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        err = float(((x_high - x_low) / delta).flatten(1).pow(2).mean(1).sqrt().max())
        if not math.isfinite(err):
            raise FloatingPointError(f"adaptive DPM-Solver: non-finite error estimate from t = {t_s:.6g}")
        if h < 1e-10:
            raise FloatingPointError(f"adaptive DPM-Solver: the step underflowed at t = {t_s:.6g}; loosen rtol / atol")
        if err <= 1.0:
            x, x_prev, m0, t_s, lam_s = x_high, x_low, None, t_t, lam_t
        h = min(theta * h * err ** (-1.0 / order) if err > 0 else math.inf, lam_end - lam_s)
    return x, t_s, calls


def fast_orders(calls: int, order: int) -> list[int]:
    """DPM-Solver-fast's step orders for a budget of `calls` network calls at most `order` (Lu et al. 2022a;
    their get_orders_and_timesteps_for_singlestep_solver): sum(orders) == calls."""
    if order == 3:
        k = calls // 3 + 1
        tail = {0: [2, 1], 1: [1], 2: [2]}[calls % 3]
        return [3] * (k - len(tail)) + tail
    if order == 2:
        return [2] * (calls // 2) + [1] * (calls % 2)
    return [1] * calls


def fast_schedule(sde: SDE, ts: Tensor, order: int) -> tuple[Tensor, list[int], list[Tensor | None]]:
    """DPM-Solver-fast's steps on the grid ts of N = len(ts) - 1 calls (Lu et al. 2022a): (outer times [K + 1],
    orders [K], each step's intermediate times or None). On a grid even in lambda (the paper's, `grids.logsnr_grid`)
    its K steps are even in lambda from ts[0] to ts[-1], their intermediate calls even in lambda within each (None);
    on any other grid a step of order k takes the next k steps of the grid, calling at the grid's own times in
    between (Lu et al.'s code on its time_uniform and time_quadratic grids, and diffusers' DPMSolverSinglestep-
    Scheduler)."""
    orders = fast_orders(len(ts) - 1, order)
    lam = sde.logsnr(ts.to(torch.float64))
    steps = lam[1:] - lam[:-1]
    if torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-5, atol=0.0):  # also float32-rounded lambdas
        return logsnr_grid(sde, len(orders), float(ts[-1]), float(ts[0])), orders, [None] * len(orders)
    ends, inner = [0], []
    for k in orders:
        inner.append(ts[ends[-1] + 1 : ends[-1] + k])
        ends.append(ends[-1] + k)
    return ts[ends], orders, inner
