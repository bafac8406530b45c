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

DPM-Solver-fast (Lu et al. 2022a, Sec. 3.4 and App. C; their code's method="singlestep") spends an exact budget of
N calls: K = N // 3 + 1 steps of orders 3, ..., 3 then (2, 1), (1) or (2) for N mod 3 = 0, 1, 2 (order 2: N / 2
steps of order 2, or (N - 1) / 2 and one of order 1), the K steps evenly in lambda as in the paper; on another grid
of N steps their code instead takes k grid steps per step of order k, calling at the grid's times (`fast_schedule`).
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
    h = lam_t - lam_s
    a_t, s_t = coef(lam_t)
    s_s = coef(lam_s)[1]
    phi_1 = math.expm1(-h)
    x_t = (s_t / s_s) * x - (a_t * phi_1) * m0
    if order == 1:
        return x_t
    if order == 2:
        r1 = r[0] if r else 0.5
        a_1, s_1 = coef(lam_s + r1 * h)
        m1 = pred((s_1 / s_s) * x - (a_1 * math.expm1(-r1 * h)) * m0, lam_s + r1 * h)
        if solver_type == "midpoint":
            return x_t - (0.5 / r1 * a_t * phi_1) * (m1 - m0)
        return x_t + (a_t * (phi_1 / h + 1.0) / r1) * (m1 - m0)
    r1, r2 = r if r else (1.0 / 3.0, 2.0 / 3.0)
    a_1, s_1 = coef(lam_s + r1 * h)
    a_2, s_2 = coef(lam_s + r2 * h)
    m1 = pred((s_1 / s_s) * x - (a_1 * math.expm1(-r1 * h)) * m0, lam_s + r1 * h)
    phi_12 = math.expm1(-r2 * h)
    phi_22 = phi_12 / (r2 * h) + 1.0
    x_2 = (s_2 / s_s) * x - (a_2 * phi_12) * m0 + (r2 / r1 * a_2 * phi_22) * (m1 - m0)
    m2 = pred(x_2, lam_s + r2 * h)
    phi_2 = phi_1 / h + 1.0
    if solver_type == "midpoint":
        return x_t + (a_t * phi_2 / r2) * (m2 - m0)
    d1_0, d1_1 = (m1 - m0) / r1, (m2 - m0) / r2
    d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
    d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
    return x_t + (a_t * phi_2) * d1 - (a_t * (phi_2 / h - 0.5)) * d2


def fast_orders(calls: int, order: int) -> list[int]:
    """DPM-Solver-fast's step orders for a budget of `calls` network calls at most `order` (Lu et al. 2022a,
    Sec. 3.4; their get_orders_and_timesteps_for_singlestep_solver): sum(orders) == calls."""
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
