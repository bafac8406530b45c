"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) with a corrector (UniC) that reuses the next step's
network evaluation, so order p + 1 costs no extra NFE. Data-prediction form (x0_hat = `sde.denoise`) in
lambda_t = `sde.logsnr(t)`, for every Gaussian path; `prediction="noise"` is its noise-prediction form (the
authors' predict_x0=False), the same update with the roles of (alpha, sigma, lambda, x0_hat) and (sigma, alpha,
-lambda, eps) swapped, as for DPM-Solver (samplers/dpm_solver.py).

With h = lambda_s - lambda_t, r_k = (lambda_{t_k} - lambda_t) / h for the earlier points and r = 1 for the new one,
D_k = (x0_hat_k - x0_hat_t) / r_k, and phi_k(h) the exponential-integrator functions
(h phi_1 = 1 - e^{-h} etc.), one step is

    x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) x0_hat_t - alpha_s B(h) sum_k rho_k D_k,

where rho solves R rho = g with R_ik = r_k^(i-1) and g_i = i! h phi_{i+1}(h) / B(h) (Zhao et al. 2023, Alg. 2/3;
B(h) = h is "bh1", B(h) = e^h - 1 in the data form "bh2"). The predictor uses the earlier points (p - 1 of them;
for p = 2 the paper's rho = 1/2), the corrector at the next time adds the new evaluation (order 1: rho = 1/2).
This is the same arithmetic as the authors' code and diffusers' UniPCMultistepScheduler (tested to float
precision); the corrector runs at every step after the first and never after the last (it would need one more
evaluation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, as_time

from .base import check_grid, check_option, final_denoise
from .dpm_solver import final_order


def unipc_coefficients(h: float, order: int, variant: str) -> tuple[list[float], float, float]:
    """(g, B(h), h phi_1) for `order` terms: g_i = i! h phi_{i+1}(h) / B(h), in the data form (hh = -h)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    g, factorial = [], 1
    for i in range(1, order + 1):
        g.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return g, b_h, h_phi_1


def solve_rho(rks: list[float], g: list[float]) -> list[float]:
    """rho with sum_k r_k^(i-1) rho_k = g_i (a small Vandermonde system)."""
    r = torch.tensor(rks, dtype=torch.float64)
    vander = torch.stack([r**i for i in range(len(rks))])
    return torch.linalg.solve(vander, torch.tensor(g, dtype=torch.float64)).tolist()


def unipc_update(
    x: Tensor,
    x0_hats: list[Tensor],
    lam: list[float],
    sigma: tuple[float, float],
    alpha_next: float,
    variant: str = "bh2",
    x0_new: Tensor | None = None,
) -> Tensor:
    """One UniP step (x0_new None) or UniC correction (x0_new: the prediction at the target) of order
    len(x0_hats), from x at lam[-2] to lam[-1]; x0_hats newest-last at lam[:-1]."""
    order = len(x0_hats)
    h = lam[-1] - lam[-2]
    m0 = x0_hats[-1]
    rks = [(lam[-2 - k] - lam[-2]) / h for k in range(1, order)]
    d1s = [(x0_hats[-1 - k] - m0) / r for k, r in zip(range(1, order), rks)]
    g, b_h, h_phi_1 = unipc_coefficients(h, order, variant)
    x_next = (sigma[1] / sigma[0]) * x - (alpha_next * h_phi_1) * m0
    if x0_new is None:  # UniP: p - 1 earlier points
        if order == 1:
            return x_next
        rho = [0.5] if order == 2 else solve_rho(rks, g[:-1])
        res = sum(c * d for c, d in zip(rho, d1s))
        return x_next - (alpha_next * b_h) * res
    rho = [0.5] if order == 1 else solve_rho([*rks, 1.0], g)
    res = sum((c * d for c, d in zip(rho[:-1], d1s)), torch.zeros_like(x)) + rho[-1] * (x0_new - m0)
    return x_next - (alpha_next * b_h) * res


def unipc_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 2,
    variant: str = "bh2",
    lower_order_final: str = "none",
    prediction: str = "data",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """UniPC-p with B(h) `variant` (Zhao et al. 2023); NFE = steps (+1 denoise), like DPM-Solver++. `prediction`
    "data" (x0_hat) or "noise" (eps).

    Warm-up and the end follow `samplers.dpm_solver.final_order`; "denoise" is diffusers' lower_order_final (its
    last step, the order-1 step to sigma = 0, is our final denoising), the same as the default "none" at order 2.
    """
    del generator  # deterministic
    for key, value in (("order", order), ("variant", variant), ("lower_order_final", lower_order_final)):
        check_option(key, value)
    check_option("prediction", prediction)
    check_grid(sde, ts)
    ts = ts.to(x.device, torch.float64)
    alpha, sigma = sde.marginal(ts)
    lam = sde.logsnr(ts).tolist()
    if prediction == "noise":  # the same update with the roles of (alpha, sigma, lambda, x0_hat) swapped
        alpha, sigma, lam = sigma, alpha, [-v for v in lam]
    steps, x0_hats, x_prev, k = len(ts) - 1, [], None, 0
    for i in range(steps):
        t = as_time(float(ts[i]), x)
        score = score_fn(x, t)
        x0_new = sde.denoise(x, t, score) if prediction == "data" else -float(alpha[i]) * score  # eps = -sigma score
        if x_prev is not None:  # UniC: correct x_i with the evaluation just made, at the last step's order
            span = (float(sigma[i - 1]), float(sigma[i]))
            x = unipc_update(x_prev, x0_hats[-k:], lam[i - k : i + 1], span, float(alpha[i]), variant, x0_new)
        x0_hats = (x0_hats + [x0_new])[-order:]
        k = final_order(order, i, steps, lower_order_final)
        x_prev = x
        span = (float(sigma[i]), float(sigma[i + 1]))
        x = unipc_update(x, x0_hats[-k:], lam[i + 1 - k : i + 2], span, float(alpha[i + 1]), variant)
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
