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
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

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
