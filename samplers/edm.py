"""EDM's stochastic sampler (Karras et al. 2022, Alg. 2): Heun steps in the noise level with "churn", a little
noise added before each step, for every Gaussian path.

It runs in EDM's variables y = x / alpha_t and sigma~ = sigma_t / alpha_t (their Eq. 4 with s(t) = alpha_t), where
every path is the VE process y = x_0 + sigma~ noise, so Alg. 2 applies unchanged: at noise level sigma~_i with
gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma~_i <= S_tmax (else 0), raise the level to
sigma^ = (1 + gamma_i) sigma~_i (capped at the path's level at T, where the network was trained) by adding
sqrt(sigma^2 - sigma~_i^2) S_noise z, take an Euler step to sigma~_{i+1} with d = (y - D(y; sigma^)) / sigma^
and correct it with Heun's rule. With S_churn > 0 every step draws its z, used or not (gamma_i = 0 outside
[S_tmin, S_tmax]), as Alg. 2's line 4 and EDM's and k-diffusion's code do, so a seeded run consumes the same noise
stream as theirs. The last of EDM's N steps goes to sigma = 0, where the Euler step lands on D itself: that is our
final denoising (after the same churn), so a grid of `steps` steps is EDM's N = steps + 1 and costs 2 steps + 1
NFE. S_churn = 0 is EDM's deterministic Heun sampler (Alg. 1).

`step` swaps the step taken after the churn, as k-diffusion's Alg. 2 variants do: "euler" (its sample_euler: the
Euler step alone, steps + 1 NFE) or "dpm_2" (its sample_dpm_2: the slope at the midpoint of log sigma^ and
log sigma~_{i+1}, from an Euler step there, carries the whole step; 2 steps + 1 NFE). Without churn they are the
`ode` sampler's Euler in sigma and the noise-form singlestep DPM-Solver-2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn

from .base import check_grid, check_option, denoise_at_level, randn_like


def check_edm_options(s_churn, s_tmin, s_tmax, s_noise) -> None:
    """Raise ValueError for a negative churn or noise scale or S_tmin > S_tmax."""
    for key, value in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)):
        check_option(key, value)
    if s_tmin > s_tmax:
        raise ValueError(f"s_tmin must not exceed s_tmax, got s_tmin = {s_tmin}, s_tmax = {s_tmax}")


def level_grid(sde: SDE, ts: Tensor, device) -> tuple[Tensor, list[float], list[float], float]:
    """The grid in EDM's variables: ts (float64, on device), alpha_t and the noise levels sigma_t / alpha_t at its
    times, and the path's level at T (where the network was trained up to)."""
    ts = ts.to(device, torch.float64)
    top = torch.exp(-sde.logsnr(torch.tensor([float(sde.T)], dtype=torch.float64)))
    return ts, sde.marginal(ts)[0].tolist(), torch.exp(-sde.logsnr(ts)).tolist(), float(top)


def heun_step(
    score_fn: ScoreFn, sde: SDE, y: Tensor, d: Tensor, level: float, level_next: float, t_next: float | None = None
) -> Tensor:
    """Heun's step in EDM's variables from (y, level), where the slope d = (y - D(y; level)) / level is known, to
    level_next (Karras et al. 2022, Alg. 1, lines 5-8; t_next: the time of level_next, if known)."""
    h = level_next - level
    y_next = y + h * d
    d_next = (y_next - denoise_at_level(score_fn, sde, y_next, level_next, t_next)) / level_next
    return y + h / 2 * (d + d_next)


def edm_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    step: str = "heun",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Karras et al. 2022, Alg. 2 on the grid ts (then the step to sigma = 0 as the final denoising); `step`
    "euler" or "dpm_2": k-diffusion's variants of it (module docstring).

    EDM's ImageNet-64 settings are S_churn = 40, S_tmin = 0.05, S_tmax = 50, S_noise = 1.003 (their Table 5);
    the defaults here (no churn) make it the deterministic Heun sampler.
    """
    check_edm_options(s_churn, s_tmin, s_tmax, s_noise)
    check_option("step", step)
    check_grid(sde, ts)
    ts, alpha, noise_levels, level_top = level_grid(sde, ts, x.device)
    steps = len(ts) - 1
    gamma_max = min(s_churn / (steps + 1), math.sqrt(2.0) - 1.0)

    def churn(y: Tensor, i: int) -> tuple[Tensor, float, float | None]:
        """Raise the noise level at grid point i by gamma_i (Alg. 2, lines 4-6)."""
        level = noise_levels[i]
        z = randn_like(y, generator) if gamma_max > 0 else None  # drawn every step, as EDM's code does
        gamma = gamma_max if s_tmin <= level <= s_tmax else 0.0
        level_hat = min(level * (1.0 + gamma), level_top)
        if level_hat <= level:
            return y, level, float(ts[i])
        y = y + math.sqrt(level_hat**2 - level**2) * s_noise * z
        return y, level_hat, None

    y = x / alpha[0]
    for i in range(steps):
        y_hat, level_hat, t_hat = churn(y, i)
        d = (y_hat - denoise_at_level(score_fn, sde, y_hat, level_hat, t_hat)) / level_hat
        h = noise_levels[i + 1] - level_hat
        if step == "euler":
            y = y_hat + h * d
        elif step == "dpm_2":  # the slope at the log-midpoint level, reached by an Euler step
            level_mid = math.sqrt(level_hat * noise_levels[i + 1])
            y_mid = y_hat + (level_mid - level_hat) * d
            y = y_hat + h * (y_mid - denoise_at_level(score_fn, sde, y_mid, level_mid)) / level_mid
        else:
            y = heun_step(score_fn, sde, y_hat, d, level_hat, noise_levels[i + 1], float(ts[i + 1]))
        if callback is not None:  # a callback may change info["x"] (in place or not): y follows it
            info = {"i": i, "t": ts[i + 1], "x": alpha[i + 1] * y}
            callback(info)
            y = info["x"] / alpha[i + 1]
    if not denoise:
        return alpha[-1] * y
    # Final denoising: EDM's last step, Euler to sigma = 0 from the churned point.
    y_hat, level_hat, t_hat = churn(y, steps)
    return denoise_at_level(score_fn, sde, y_hat, level_hat, t_hat)
