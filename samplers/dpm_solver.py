"""Multistep DPM-Solver++ (Lu et al. 2022b), deterministic (the probability-flow ODE) or stochastic (eta > 0), for
10-20 NFE.

With lambda_t = `sde.logsnr(t)` the probability-flow ODE is solved exactly in its linear part (an exponential
integrator) and the data prediction x0_hat = `sde.denoise` is extrapolated in lambda from the previous steps'
evaluations (one score evaluation per step). It reads only the marginals, so it serves every Gaussian path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, as_time

from .base import check_grid, check_option, final_denoise, randn_like


def dpm_solver_update(
    x: Tensor,
    x0_hats: list[Tensor],
    lam: list[float],
    sigma: tuple[float, float],
    alpha_next: float,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multistep DPM-Solver++ update of order len(x0_hats) in 1..3 (Lu et al. 2022b, Alg. 2 and App. B).

    x0_hats are the newest-last data predictions at times with half-log-SNRs lam[:-1]; lam[-1] is the target's.
    sigma = (sigma at the current time, sigma at the target).

    eta in [0, 1] picks the reverse process: eta = 0 is the probability-flow ODE, eta > 0 the SDE family with
    the same marginals whose exact solution in lambda (step h) is
        x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s int_0^h (1 + eta) e^{-(1 + eta)(h - u)} x0(u) du
              + sigma_s sqrt(1 - e^{-2 eta h}) z,
    At eta = 1 this is the reverse diffusion SDE solved by Lu et al. 2022b's SDE-DPM-Solver++; eta in (0, 1)
    interpolates to the ODE. Expanding x0 in u and integrating exactly gives the ODE's phi functions at
    hh = (1 + eta) h. At eta = 1, order 1 is DDIM with eta = 1 (the ancestral step with the posterior variance);
    for point-mass data (x0_hat exact) every order and eta keeps the exact marginals (both tested).
    """
    h = lam[-1] - lam[-2]
    hh = (1.0 + eta) * h
    phi_1 = math.expm1(-hh)
    m0 = x0_hats[-1]
    x = (sigma[1] / sigma[0] * math.exp(-eta * h)) * x - (alpha_next * phi_1) * m0
    if len(x0_hats) == 2:  # DPM-Solver++(2M), the "midpoint" form of the first-order correction
        d1_0 = (m0 - x0_hats[-2]) / ((lam[-2] - lam[-3]) / h)
        x = x - (0.5 * alpha_next * phi_1) * d1_0
    elif len(x0_hats) == 3:  # DPM-Solver++(3M)
        r0, r1 = (lam[-2] - lam[-3]) / h, (lam[-3] - lam[-4]) / h
        d1_0, d1_1 = (m0 - x0_hats[-2]) / r0, (x0_hats[-2] - x0_hats[-3]) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = phi_1 / hh + 1
        phi_3 = phi_2 / hh - 0.5
        x = x + (alpha_next * phi_2) * d1 - (alpha_next * phi_3) * d2
    if eta > 0:
        x = x + (sigma[1] * math.sqrt(-math.expm1(-2.0 * eta * h))) * randn_like(x, generator)
    return x


def dpm_solver_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 2,
    eta: float = 0.0,
    lower_order_final: bool = True,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Multistep DPM-Solver++ of order 1-3 in lambda_t (Lu et al. 2022b, Alg. 2). NFE = steps (+1 denoise).

    eta = 0 (default) solves the probability-flow ODE (deterministic); eta > 0 the stochastic SDE-DPM-Solver++
    (see `dpm_solver_update`), which with an imperfect learned score often gives better samples at the same NFE.
    The first steps warm up at lower order; with fewer than 15 steps the last steps also lower their order
    (as the reference implementation does), which keeps very short grids stable.
    """
    check_option("order", order)
    check_option("eta", eta)
    check_grid(sde, ts)
    ts = ts.to(x.device, torch.float64)
    alpha, sigma = sde.marginal(ts)
    lam = sde.logsnr(ts).tolist()
    steps, x0_hats = len(ts) - 1, []
    for i in range(steps):
        t = as_time(float(ts[i]), x)
        x0_hats = (x0_hats + [sde.denoise(x, t, score_fn(x, t))])[-order:]
        k = min(order, i + 1, steps - i if lower_order_final and steps < 15 else order)
        x = dpm_solver_update(
            x,
            x0_hats[-k:],
            lam[i + 1 - k : i + 2],
            (float(sigma[i]), float(sigma[i + 1])),
            float(alpha[i + 1]),
            eta,
            generator,
        )
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
