"""Restart sampling (Xu et al. 2023): EDM's Heun sampler, with restart intervals [t_min, t_max] of the noise level
in which the sample is sent back up by the forward process and brought down again by the ODE, K times.

In EDM's variables y = x / alpha_t and sigma~ = sigma_t / alpha_t (edm.py), where every path is y = x_0 + sigma~
noise, the main run is EDM's Heun sampler on the grid ts (its last step to sigma~ = 0 is our final denoising). On
reaching the grid level nearest an interval's t_min (the authors' code snaps t_min to the main grid), it repeats K
times: add sqrt(t_max^2 - t_min^2) S_noise z, which for S_noise = 1 is the path's own forward kernel from t_min to
t_max, and take N_restart - 1 Heun steps back down an EDM grid (rho = 7) from t_max to t_min, each after a churn by
gamma where the level lies in [S_tmin, S_tmax]. The paper's argument: the added noise contracts the error the
ODE has accumulated (an ODE carries it to the end), while the steps keep the ODE's small discretisation error.

It follows the authors' code (Newbeeer/diffusion_restart_sampling, benchmarks/generate_restart.py,
`restart_sampler`), pinned by tests/test_restart.py to numbers it wrote. As there, every Heun step, main or
restart, draws its churn z whether it is used or not, so a seeded run consumes the same noise stream as theirs. It
differs where theirs fails silently: an interval that snaps to the grid's first level (never reached there), to
sigma~ = 0, or to the level of another interval (theirs keeps the last), and t_max at or below the snapped level
(NaN there) or above the path's level at T are refused; a churn is capped at the level at T as in edm.py (at their
settings, S_tmax = 1, it never is); their restart grid is float32, ours float64.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sde import SDE, ScoreFn

from .base import check_grid, check_option, denoise_at_level, randn_like
from .edm import check_edm_options, heun_step, level_grid
from .grids import karras_levels

# The authors' defaults (their README's and hyperparam.py's command lines, CIFAR-10): one interval
# [N_restart, K, t_min, t_max] = [3, 2, 0.06, 0.30] (their CIFAR-10 VP setting with 18 main steps, 43 NFE), churn
# gamma 0.05 in [S_tmin, S_tmax] = [0.01, 1], S_noise 1 (1.003 on ImageNet).
DEFAULT_INTERVALS = ((3, 2, 0.06, 0.30),)
RESTART_GAMMA, RESTART_S_TMIN, RESTART_S_TMAX = 0.05, 0.01, 1.0
RHO = 7.0


def parse_intervals(intervals) -> tuple[tuple[int, int, float, float], ...]:
    """The restart intervals as (N_restart, K, t_min, t_max), from a sequence of 4-sequences or its JSON text (a
    list of lists, or the authors' `--restart_info` dict, whose values are read in key order). ValueError naming
    the bad entry: N_restart must be an integer >= 2 (grid points from t_max to t_min), K an integer >= 0, and
    0 < t_min < t_max finite noise levels sigma / alpha."""
    text = intervals
    if isinstance(intervals, str):
        try:
            intervals = json.loads(intervals)
        except json.JSONDecodeError:
            raise ValueError(
                f"restart intervals must be JSON like [[3, 2, 0.06, 0.3]] ([N_restart, K, t_min, t_max] each), "
                f"got {text!r}"
            ) from None
        if isinstance(intervals, dict):
            intervals = list(intervals.values())
    if not isinstance(intervals, Sequence) or isinstance(intervals, str):
        raise ValueError(f"restart intervals must be a list of [N_restart, K, t_min, t_max], got {text!r}")
    parsed = []
    for entry in intervals:
        if not (isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 4):
            raise ValueError(f"a restart interval is [N_restart, K, t_min, t_max], got {entry!r} in {text!r}")
        n, k, lo, hi = entry
        integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, k))
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
        if not (integer and n >= 2 and k >= 0):
            raise ValueError(f"restart interval {list(entry)}: N_restart must be an integer >= 2 and K an integer >= 0")
        if not (numbers and 0 < lo < hi < math.inf):
            raise ValueError(f"restart interval {list(entry)}: need noise levels 0 < t_min < t_max < inf")
        parsed.append((int(n), int(k), float(lo), float(hi)))
    return tuple(parsed)


def snap_intervals(intervals, levels: Sequence[float], level_top: float) -> dict[int, tuple[int, int, float]]:
    """{main grid index: (N_restart, K, t_max)}: each interval's t_min snapped to the nearest of the grid's levels
    and sigma~ = 0 after them (the authors' code); ValueError for an interval that snaps to the first level or to
    0, two on one level, or a t_max not above its snapped level or above the path's level at T."""
    extended = torch.tensor([*levels, 0.0], dtype=torch.float64)
    snapped = {}
    for n, k, lo, hi in parse_intervals(intervals):
        index = int(torch.argmin((extended - lo).abs()))
        where = f"restart interval {[n, k, lo, hi]}: t_min snaps to"
        if index == 0:
            raise ValueError(f"{where} the grid's first level {levels[0]:.4g}, where no restart can follow a step")
        if index == len(levels):
            raise ValueError(f"{where} sigma = 0, below the grid's last level {levels[-1]:.4g}; raise t_min")
        if index in snapped:
            raise ValueError(f"{where} the level {levels[index]:.4g}, which another interval restarts from")
        if not levels[index] < hi <= level_top:
            raise ValueError(
                f"{where} the level {levels[index]:.4g}; t_max must lie above it and at most at the path's level "
                f"at T, {level_top:.4g}"
            )
        snapped[index] = (n, k, hi)
    return snapped


def restart_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    intervals=DEFAULT_INTERVALS,
    gamma: float = RESTART_GAMMA,
    s_churn: float = 0.0,
    s_tmin: float = RESTART_S_TMIN,
    s_tmax: float = RESTART_S_TMAX,
    s_noise: float = 1.0,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Xu et al. 2023's Restart sampler on the grid ts (module docstring): intervals [N_restart, K, t_min, t_max]
    in noise levels sigma / alpha (or their JSON text), restart churn `gamma`, main-run churn `s_churn` as EDM's,
    both where the level lies in [s_tmin, s_tmax]. NFE: 2 (len(ts) - 1) + 1 (with the final denoising) plus
    2 K (N_restart - 1) per interval. `callback(info)` after every step, main or restart, with info["restart"] =
    (grid index, k) in a restart, else None; it may change info["x"]."""
    check_edm_options(s_churn, s_tmin, s_tmax, s_noise)
    check_option("gamma", gamma)
    check_grid(sde, ts)
    ts, alpha, levels, level_top = level_grid(sde, ts, x.device)
    restarts = snap_intervals(intervals, levels, level_top)
    steps = len(ts) - 1
    churn_main = min(s_churn / (steps + 1), math.sqrt(2.0) - 1.0)

    def step(y: Tensor, level: float, t: float | None, level_next: float | None, t_next, churn: float) -> Tensor:
        """One Heun step after the churn (Alg. 2); the final denoising when level_next is None."""
        z = randn_like(y, generator)  # drawn every step, used or not, as the authors' code does
        level_hat = min(level * (1.0 + churn), level_top) if s_tmin <= level <= s_tmax else level
        if level_hat > level:
            y, t = y + math.sqrt(level_hat**2 - level**2) * s_noise * z, None
        denoised = denoise_at_level(score_fn, sde, y, level_hat, t)
        if level_next is None:
            return denoised
        return heun_step(score_fn, sde, y, (y - denoised) / level_hat, level_hat, level_next, t_next)

    def report(y: Tensor, i: int, t: float, a: float, where) -> Tensor:
        if callback is None:
            return y
        info = {"i": i, "t": t, "x": a * y, "restart": where}
        callback(info)
        return info["x"] / a

    y = x / alpha[0]
    for i in range(steps):
        y = step(y, levels[i], float(ts[i]), levels[i + 1], float(ts[i + 1]), churn_main)
        y = report(y, i, ts[i + 1], alpha[i + 1], None)
        if i + 1 not in restarts:
            continue
        n, k_max, top = restarts[i + 1]
        inner = karras_levels(top, levels[i + 1], n - 1, RHO)  # an EDM grid from t_max down to the snapped level
        times = sde.t_from_logsnr(-torch.log(inner))
        times[-1] = ts[i + 1]
        inner_alpha, inner, times = sde.marginal(times)[0].tolist(), inner.tolist(), times.tolist()
        for k in range(k_max):
            y = y + randn_like(y, generator) * math.sqrt(inner[0] ** 2 - inner[-1] ** 2) * s_noise
            for j in range(n - 1):
                y = step(y, inner[j], times[j], inner[j + 1], times[j + 1], gamma)
                y = report(y, i, times[j + 1], inner_alpha[j + 1], (i + 1, k))
    if not denoise:
        return alpha[-1] * y
    return step(y, levels[-1], float(ts[-1]), None, None, churn_main)
