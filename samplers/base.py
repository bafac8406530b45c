"""Pieces every sampler shares: noise draws, the final denoising, the ancestral step and grid checks.

The Gaussian algebra they rest on (Tweedie's x0_hat = `sde.denoise`, the posterior q(x_s | x_t, x_0) =
`sde.posterior`, lambda_t = `sde.logsnr`) lives in the path (sde/base.py), so one ancestral step serves any path
and any pair of times s < t (Ho et al. 2020, Eqs. 6-7).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time
from sde.base import STEP_VARIANCES
from sde.ode_methods import check_ode_method

# DPM-Solver++(3M)'s quadratic term: "exact" (2 phi_3, third order) or "reference" (phi_3: the libraries').
THIRD_ORDER = ("exact", "reference")
# DPM-Solver++'s first-order correction from two data predictions: "midpoint" (- 0.5 alpha phi_1 D1: Lu et al.'s
# code, diffusers' and k-diffusion's default) or "heun" (+ alpha phi_2 D1: the linear prediction integrated exactly).
SOLVER_TYPES = ("midpoint", "heun")
# DPM-Solver's step structure: "multistep" (one call per step, earlier calls reused), "singlestep" (k calls per step),
# "sde" (k-diffusion's DPM++ SDE: 2S with ancestral noise at both calls), "fast" (DPM-Solver-fast: singlestep steps
# of orders 3, ..., 3, then 2 / 1, one call per grid step in all), "adaptive" (DPM-Solver-12 / -23: singlestep steps
# of adaptive size under rtol / atol) or "adaptive_pid" (the same under k-diffusion's PID step control).
DPM_METHODS = ("multistep", "singlestep", "sde", "fast", "adaptive", "adaptive_pid")
# Where a singlestep DPM-Solver step places its intermediate calls: evenly in lambda (the paper's) or in t.
INNER_GRIDS = ("logsnr", "t")
# PNDM's warm-up (samplers/pndm.py): "prk" (pseudo Runge-Kutta, F-PNDM), "plms" (pseudo Heun, then lower orders) or
# "ipndm" (Adams-Bashforth of lower orders only).
PNDM_WARMUPS = ("prk", "plms", "ipndm")
# The step the EDM sampler takes after its churn (samplers/edm.py): Heun's (Karras et al.'s Alg. 2), Euler's, or the
# DPM-Solver-2 step with its midpoint in log sigma (k-diffusion's sample_euler / sample_dpm_2 with churn).
EDM_STEPS = ("heun", "euler", "dpm_2")
# What DPM-Solver and UniPC extrapolate: "data" (x0_hat: DPM-Solver++, Lu et al. 2022b) or "noise" (eps: DPM-Solver,
# Lu et al. 2022a, multistep; UniPC's predict_x0=False).
PREDICTIONS = ("data", "noise")
# The predictor-corrector loop (samplers/pc.py): the paper's Alg. 1, or score_sde_pytorch's get_pc_sampler.
PC_LOOPS = ("predictor_first", "score_sde")
# How multistep solvers lower their order at the end (samplers/dpm_solver.py: final_order).
LOWER_ORDER_FINAL = ("none", "last", "denoise")
# UniPC's B(h) (samplers/unipc.py) and the fixed-step ODE variables (samplers/ode.py; "default" resolves per path).
UNIPC_VARIANTS = ("bh1", "bh2")
ODE_VARIABLES = ("t", "sigma")


def check_choice(name: str, value, valid) -> None:
    """Raise ValueError naming an unknown choice and the valid ones."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {sorted(valid)}")


def check_positive(name: str, value, integer: bool = False) -> None:
    """Raise ValueError unless value is a positive number (an integer if asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)
    if not ok or (integer and int(value) != value):
        kind = "a positive integer" if integer else "> 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def check_option(key: str, value) -> None:
    """Validate one sampler option's value by its keyword (predictor and corrector names: see samplers/options.py)."""
    if key == "variance":
        check_choice("ancestral variance", value, STEP_VARIANCES)
    elif key == "method":
        check_ode_method(value)
    elif key == "order":
        check_choice("DPM-Solver / UniPC order", value, (1, 2, 3))
    elif key == "eta":
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"eta must lie in [0, 1] (DDIM and DPM-Solver++ stochasticity), got {value!r}")
    elif key == "variant":
        check_choice("UniPC variant", value, UNIPC_VARIANTS)
    elif key in ("s_churn", "s_tmin", "s_tmax", "gamma"):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and value == value):
            raise ValueError(f"{key} must be a number >= 0 (EDM's and Restart's churn), got {value!r}")
    elif key in ("snr", "eps", "rtol", "atol", "s_noise"):
        check_positive(key, value)
    elif key in ("n_steps", "n_corrector_steps"):
        check_positive(key, value, integer=True)
    elif key == "variable":
        check_choice("ODE integration variable", value, (*ODE_VARIABLES, "default"))
    elif key == "third_order":
        check_choice("third_order (DPM-Solver++(3M) quadratic term)", value, THIRD_ORDER)
    elif key == "loop":
        check_choice("PC loop", value, PC_LOOPS)
    elif key == "solver_type":
        check_choice("solver_type (DPM-Solver++'s second-order form)", value, SOLVER_TYPES)
    elif key == "prediction":
        check_choice("solver prediction", value, PREDICTIONS)
    elif key == "dpm_method":
        check_choice("DPM-Solver method", value, DPM_METHODS)
    elif key == "inner":
        check_choice("singlestep DPM-Solver's inner spacing", value, INNER_GRIDS)
    elif key == "lms_order":
        check_choice("LMS order", value, (1, 2, 3, 4))
    elif key == "warmup":
        check_choice("PNDM warm-up", value, PNDM_WARMUPS)
    elif key == "step":
        check_choice("EDM sampler step", value, EDM_STEPS)
    elif key == "lower_order_final":
        check_choice("lower_order_final", value, LOWER_ORDER_FINAL)
    elif key in ("denoise", "per_sample_step") and not isinstance(value, bool):
        raise ValueError(f"{key} must be True or False, got {value!r}")


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A N(0, I) draw shaped like x, from the given generator (on x's device and dtype)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def final_denoise(score_fn: ScoreFn, sde: SDE, x: Tensor, t: float | Tensor, denoise: bool) -> Tensor:
    """The usual last step: x0_hat at the grid's last time (one extra score evaluation), or x unchanged."""
    if not denoise:
        return x
    t = as_time(t, x)
    return sde.denoise(x, t, score_fn(x, t))


def denoise_at_level(score_fn: ScoreFn, sde: SDE, y: Tensor, level: float, t: float | None = None) -> Tensor:
    """EDM's denoiser D(y; sigma~) for y = x / alpha_t: x0_hat at the time whose noise level sigma_t / alpha_t is
    `level` (found by `sde.t_from_logsnr` unless t is given; Karras et al. 2022, Eq. 4 with s(t) = alpha_t)."""
    if t is None:
        t = float(sde.t_from_logsnr(torch.tensor([-math.log(level)], dtype=torch.float64)))
    time = as_time(t, y)
    x = float(sde.marginal(time[:1].double())[0]) * y
    return sde.denoise(x, time, score_fn(x, time))


def ancestral_step(
    sde: SDE, x: Tensor, t: Tensor, s: Tensor, score: Tensor, noise: Tensor, variance: str = "forward"
) -> Tensor:
    """One ancestral step t -> s < t: x_s ~ q(x_s | x_t, x0_hat) with Tweedie's x0_hat (Ho et al. 2020, Alg. 2).

    variance 'posterior' uses beta-tilde = sigma_s^2 v^2 / sigma_t^2 (for VE this is SMLD's ancestral step,
    Song et al. 2021, Eq. 47); 'forward' uses the forward step's v^2 (DDPM's sigma_t^2 = beta_t).
    """
    c_x, c_0, _ = sde.posterior(s, t)
    var = sde.step_variance(s, t, variance)
    x0_hat = sde.denoise(x, t, score)
    mean = append_dims(c_x, x.ndim) * x + append_dims(c_0, x.ndim) * x0_hat
    return mean + append_dims(var.sqrt(), x.ndim) * noise


def check_grid(sde: SDE, ts: Tensor) -> None:
    """Raise ValueError unless ts is a strictly decreasing grid in [0, T] with alpha_t > 0 and sigma_t > 0 at
    both ends (the score needs sigma_t > 0, the data prediction alpha_t > 0)."""
    ts = torch.as_tensor(ts)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"a time grid needs at least 2 times (1 step), got shape {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("the time grid must decrease strictly from T to t_min")
    if float(ts[0]) > sde.T or float(ts[-1]) < 0:
        raise ValueError(f"the time grid must lie in [0, T = {sde.T}], got [{float(ts[-1])}, {float(ts[0])}]")
    alpha, sigma = sde.marginal(ts[[0, -1]].double())
    if float(sigma[1]) <= 0:
        raise ValueError(
            f"the path {sde!r} has sigma_t = 0 at t = {float(ts[-1])}: the score does not exist "
            "there; stop the grid at some t_min > 0"
        )
    if float(alpha.min()) <= 0:
        raise ValueError(
            f"the path {sde!r} has alpha_t = 0 on the grid [{float(ts[-1])}, {float(ts[0])}]: the data "
            "prediction (x + sigma^2 score) / alpha does not exist there; end the path before it"
        )
