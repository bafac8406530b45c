"""Sampling time grids from T (or t_max < T) down to t_min: uniform, quadratic, log-SNR, Karras (EDM, rho = 7), and
on a discrete chain improved DDPM's respacing.

Every grid is a decreasing float64 tensor [steps + 1] with t[0] = T and t[-1] = t_min exactly. The log-SNR and
Karras grids are spaced in lambda_t = sde.logsnr(t) = log(alpha_t / sigma_t) (Lu et al. 2022) and in EDM's noise
level sigma_t / alpha_t = exp(-lambda_t) (Karras et al. 2022, Eq. 5) and mapped back to t by `sde.t_from_logsnr`,
so they work for every path: each is "alpha_t x_0 + sigma_t noise" and lambda_t decreases strictly in t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE
from sde.discrete import respaced_steps


def uniform_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """Evenly spaced times (Song et al. 2021)."""
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)


def quadratic_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """Times quadratic in the step index, dense near t_min, from t_max (the shape of DDIM's 'quad' skip, Song et al.
    2021a, whose code stops at 0.8 N and rounds to integer steps; docs/samplers.md)."""
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return t_min + (t_max - t_min) * u**2


def logsnr_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """Times evenly spaced in lambda_t = log(alpha_t / sigma_t) (Lu et al. 2022, DPM-Solver's 'logSNR')."""
    ends = torch.tensor([t_max, t_min], dtype=torch.float64)
    lam_max_t, lam_min_t = sde.logsnr(ends).unbind()
    lam = torch.linspace(float(lam_max_t), float(lam_min_t), steps + 1, dtype=torch.float64)
    return pin_ends(sde.t_from_logsnr(lam), t_max, t_min)


def karras_grid(sde: SDE, steps: int, t_min: float, t_max: float, rho: float = 7.0) -> Tensor:
    """Noise levels s = sigma_t / alpha_t evenly spaced in s^(1/rho) (Karras et al. 2022, Eq. 5, rho = 7)."""
    ends = torch.tensor([t_max, t_min], dtype=torch.float64)
    s_max, s_min = torch.exp(-sde.logsnr(ends)).tolist()
    s = karras_levels(s_max, s_min, steps, rho)
    return pin_ends(sde.t_from_logsnr(-torch.log(s)), t_max, t_min)


def karras_levels(s_max: float, s_min: float, steps: int, rho: float = 7.0) -> Tensor:
    """steps + 1 noise levels from s_max down to s_min, evenly spaced in s^(1/rho) (Karras et al. 2022, Eq. 5)."""
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho


def respaced_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """A discrete chain's own steps, steps + 1 of its N, as improved DDPM's respacing keeps them (Nichol & Dhariwal
    2021, Sec. 4; `sde.discrete.respaced_steps`): its step k at time k T / N, from T down to its first step T / N."""
    n = getattr(sde, "N", None)
    if n is None:
        raise ValueError(f"time grid 'respaced' needs a discrete chain (ddpm, cosine), not {sde!r}")
    if abs(t_min - sde.T / n) > 1e-12 * sde.T or t_max != sde.T:
        raise ValueError(
            f"time grid 'respaced' runs from T = {sde.T} to the chain's first step T / N = {sde.T / n}, "
            f"got t_max = {t_max}, t_min = {t_min}"
        )
    if steps + 1 > n:
        raise ValueError(f"time grid 'respaced' keeps at most the chain's {n} steps, got steps = {steps} (+ 1 times)")
    return torch.tensor(respaced_steps(n, steps + 1)[::-1], dtype=torch.float64) * sde.T / n


def pin_ends(t: Tensor, t_max: float, t_min: float) -> Tensor:
    """Set the end points exactly (bisection leaves them within ~1e-16 of the target)."""
    t = t.clone()
    t[0], t[-1] = t_max, t_min
    return t


GRIDS = {"uniform": uniform_grid, "quadratic": quadratic_grid, "logsnr": logsnr_grid, "karras": karras_grid}
CHAIN_GRIDS = {"respaced": respaced_grid}  # a discrete chain's own steps: for chains only, from T to T / N


# Samplers of 10-50 steps whose "default" grid is the path's `solver_grid` (the others use its `default_grid`).
SOLVER_SAMPLERS = ("ode", "ddim", "dpm_solver", "unipc", "sa_solver", "pndm", "lms", "edm", "restart")


def keeps_alpha_one(sde: SDE) -> bool:
    """Whether the path is variance-exploding in form, alpha_t = 1 throughout (VE, EDM's path)."""
    alpha, _ = sde.marginal(torch.tensor([0.0, 0.5 * sde.T, sde.T], dtype=torch.float64))
    return bool(((alpha - 1).abs() < 1e-12).all())


def default_grid(sde: SDE, sampler: str | None = None) -> str:
    """The grid "default" means for this sampler on this path: log-SNR for EDM's stochastic sampler and Restart's main
    run (geometric in
    its noise level; measured: the quadratic grid is badly biased with it on the cosine chain) and for PNDM (its
    Adams-Bashforth weights are those of equal steps; measured: on the quadratic grid of the cosine chain and
    rectified flow its samples are far off even at 50 calls), `sde.solver_grid` for the other few-step solvers
    (SOLVER_SAMPLERS), `sde.default_grid` otherwise. LMS, whose variable is EDM's noise level: Karras on paths with
    alpha_t = 1, quadratic in t on the others (measured best of the quadratic, log-SNR and Karras grids on the 2-D
    mixture at 10-50 steps on all 7 paths)."""
    if sampler in ("edm", "restart", "pndm"):
        return "logsnr"
    if sampler == "lms":
        return "karras" if keeps_alpha_one(sde) else "quadratic"
    return sde.solver_grid if sampler in SOLVER_SAMPLERS else sde.default_grid


def time_grid(
    sde: SDE, steps: int, t_min: float = 1e-3, kind: str = "default", t_max: float | None = None, sampler=None
) -> Tensor:
    """The named time grid from t_max (default: the path's T) down to t_min, float64 [steps + 1]: one of `GRIDS`, on a
    chain one of `CHAIN_GRIDS`, or "default" for the path's own (`default_grid(sde, sampler)`). A t_max below T skips
    the very noisiest times, where x0_hat = (x + sigma^2 score) / alpha amplifies a network's error by 1/alpha
    (diffusers' lambda_min_clipped, -5.1 for the cosine schedule); the prior then stands in for p_{t_max}."""
    kind = default_grid(sde, sampler) if kind == "default" else kind
    grids = {**GRIDS, **CHAIN_GRIDS}
    if kind not in grids:
        raise ValueError(f"unknown time grid {kind!r}; valid grids: {sorted(grids) + ['default']}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"number of steps must be a positive integer, got {steps!r}")
    t_max = float(sde.T if t_max is None else t_max)
    if not 0 <= t_min < t_max <= sde.T:
        raise ValueError(f"need 0 <= t_min < t_max <= T = {sde.T}, got t_min = {t_min}, t_max = {t_max}")
    return grids[kind](sde, int(steps), float(t_min), t_max)
