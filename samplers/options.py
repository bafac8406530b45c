"""Every sampler's options, their config keys, and one check that rejects a bad choice before any work.

`check_sampler_options` is what the samplers call first and what the config validator can call too; it
raises ValueError naming the bad value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sde import SDE, require

from .base import check_choice, check_option, check_positive
from .dpm_solver import check_dpm_solver_combination
from .edm import check_edm_options, level_grid
from .grids import CHAIN_GRIDS, GRIDS, time_grid
from .langevin import CORRECTORS, check_ald_step
from .pc import PREDICTORS, check_pc_combination
from .restart import RESTART_GAMMA, RESTART_S_TMAX, RESTART_S_TMIN, parse_intervals, snap_intervals
from .sa_solver import TAU_SIGMA_MAX, TAU_SIGMA_MIN, check_sa_options

# Sampler option -> key of the config's `sampling` section that sets it. steps, grid and t_min are common.
SAMPLER_OPTIONS = {
    "ancestral": {"variance": "ancestral_variance", "denoise": "denoise"},
    "ald": {"eps": "ald_eps", "n_steps": "ald_steps", "denoise": "denoise"},
    "pc": {
        "predictor": "predictor",
        "corrector": "corrector",
        "snr": "snr",
        "n_corrector_steps": "n_corrector_steps",
        "per_sample_step": "per_sample_step",
        "variance": "ancestral_variance",
        "loop": "pc_loop",
        "denoise": "denoise",
    },
    "ode": {"method": "ode_method", "rtol": "rtol", "atol": "atol", "variable": "ode_variable", "denoise": "denoise"},
    "ddim": {"eta": "eta", "denoise": "denoise"},
    "dpm_solver": {
        "order": "order",
        "eta": "eta",
        "third_order": "third_order",
        "solver_type": "solver_type",
        "lower_order_final": "lower_order_final",
        "prediction": "solver_prediction",
        "method": "dpm_method",
        "inner": "dpm_inner",
        "rtol": "dpm_rtol",
        "atol": "dpm_atol",
        "denoise": "denoise",
    },
    "unipc": {
        "order": "order",
        "variant": "unipc_variant",
        "lower_order_final": "lower_order_final",
        "prediction": "solver_prediction",
        "denoise": "denoise",
    },
    "pndm": {"warmup": "pndm_warmup", "denoise": "denoise"},
    "sa_solver": {
        "predictor_order": "sa_predictor_order",
        "corrector_order": "sa_corrector_order",
        "tau": "sa_tau",
        "tau_sigma_min": "sa_tau_sigma_min",
        "tau_sigma_max": "sa_tau_sigma_max",
        "prediction": "solver_prediction",
        "lower_order_final": "sa_lower_order_final",
        "rescale": "sa_rescale",
        "tau_at": "sa_tau_at",
        "denoise": "denoise",
    },
    "lms": {"order": "lms_order", "denoise": "denoise"},
    "edm": {
        "s_churn": "s_churn",
        "s_tmin": "s_tmin",
        "s_tmax": "s_tmax",
        "s_noise": "s_noise",
        "step": "edm_step",
        "denoise": "denoise",
    },
    "restart": {
        "intervals": "restart_intervals",
        "gamma": "restart_gamma",
        "s_churn": "s_churn",
        "s_tmin": "restart_s_tmin",
        "s_tmax": "restart_s_tmax",
        "s_noise": "restart_s_noise",
        "denoise": "denoise",
    },
}
GRID_OPTIONS = ("steps", "grid", "t_min")
# Steps of each sampler when the config leaves `sampling.steps` at 0 (docs/samplers.md, "Default step counts"):
# DDPM's 1,000-step chain; NCSN's 100 noise levels (x ald_steps); the PC recipe's 500; 50 fixed ODE steps; DDIM's
# 50; 20 for the multistep solvers and SA-Solver (21 network calls); PNDM's 50 (Liu et al.'s setting) and LMS's 50;
# EDM's N = 18 of its CIFAR-10 setting (17 Heun steps and the final denoising, its last Euler step to sigma = 0:
# 35 network calls); Restart's main run the same (its default interval adds 8: 43, the authors' CIFAR-10 setting).
DEFAULT_STEPS = {
    "ancestral": 1000,
    "ald": 100,
    "pc": 500,
    "ode": 50,
    "ddim": 50,
    "dpm_solver": 20,
    "unipc": 20,
    "sa_solver": 20,
    "pndm": 50,
    "lms": 50,
    "edm": 17,
    "restart": 17,
}


def steps_or_default(sampler: str, steps) -> int:
    """`steps`, or the sampler's DEFAULT_STEPS when it is 0 / None."""
    return int(steps) if steps else DEFAULT_STEPS[sampler]


# What each sampler reads from the path besides marginal(t) (every one has a default derived from the marginals,
# so any path serves every sampler; `require` names what an object that is not a full path lacks). The prior is
# the caller's: samplers start from the x_T they are given.
SAMPLER_NEEDS = {
    "ancestral": ("posterior",),
    "ald": (),
    "pc": ("coefficients", "transition"),
    "ode": ("coefficients",),
    "ddim": ("posterior", "logsnr"),
    "dpm_solver": ("logsnr",),
    "unipc": ("logsnr",),
    "sa_solver": ("logsnr",),
    "pndm": ("posterior", "logsnr"),
    "lms": ("logsnr",),
    "edm": ("logsnr", "t_from_logsnr"),
    "restart": ("logsnr", "t_from_logsnr"),
}


def _check_option(sampler: str, key: str, value) -> None:
    """Validate one sampler option's value (the registries of predictors and correctors live with the solvers;
    DPM-Solver's `method` is its step structure, the ODE sampler's an ODE method)."""
    if sampler == "sa_solver" and key != "prediction" or sampler == "restart" and key != "denoise":
        return  # checked together below (check_sa_options), with the defaults of what is not given
    if sampler == "dpm_solver" and key == "method":
        check_option("dpm_method", value)
    elif sampler == "lms" and key == "order":
        check_option("lms_order", value)
    elif key == "predictor":
        check_choice("predictor", value, PREDICTORS)
    elif key == "corrector":
        check_choice("corrector", value, CORRECTORS)
    else:
        check_option(key, value)


def check_sampler_options(sampler: str, sde: SDE, *, steps=None, grid=None, t_min=None, t_max=None, **options) -> None:
    """Raise ValueError for an unknown sampler or option, a bad value, or a path that lacks what the sampler needs
    (named), before any score evaluation."""
    check_choice("sampler", sampler, SAMPLER_OPTIONS)
    require(sde, *SAMPLER_NEEDS[sampler], who=f"sampler {sampler!r}")
    valid = set(SAMPLER_OPTIONS[sampler])
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {sampler!r}; valid options: {sorted(valid)}")
    if steps is not None:
        check_positive("number of steps", steps, integer=True)
    if grid is not None:
        check_choice("time grid", grid, [*GRIDS, *CHAIN_GRIDS, "default"])
        if grid in CHAIN_GRIDS and steps is not None:  # its own conditions (a chain, its first step) before any work
            time_grid(sde, steps, 1e-3 if t_min is None else t_min, grid, t_max)
    if t_max is not None and not (isinstance(t_max, (int, float)) and (t_min or 0) < t_max <= sde.T):
        raise ValueError(f"t_max must lie in (t_min, T = {sde.T}], got {t_max!r}")
    if t_min is not None:
        if not (isinstance(t_min, (int, float)) and 0 <= t_min < sde.T):
            raise ValueError(f"t_min must lie in [0, T = {sde.T}), got {t_min!r}")
        top = float(sde.T if t_max is None else t_max)
        alpha, sigma = sde.marginal(torch.tensor([float(t_min), top], dtype=torch.float64))
        if not float(sigma[0]) > 0:
            raise ValueError(
                f"sampler {sampler!r} cannot stop at t_min = {t_min} on {sde!r}: sigma_t = 0 there, "
                "so the score is undefined; use t_min > 0, e.g. 1e-3"
            )
        if not float(alpha.min()) > 0:
            raise ValueError(
                f"sampler {sampler!r} needs alpha_t > 0 on [t_min, t_max] for the data prediction; {sde!r} "
                f"has alpha = {alpha.tolist()} at t = {[float(t_min), top]}"
            )
    for key, value in options.items():
        _check_option(sampler, key, value)
    if sampler == "ald" and "eps" in options and t_min is not None:
        alpha, sigma = sde.marginal(torch.tensor([float(t_min)], dtype=torch.float64))
        check_ald_step(options["eps"], float(sigma / alpha))
    if sampler == "edm":  # the pair S_tmin <= S_tmax, with the sampler's defaults for what is not given
        edm = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
        check_edm_options(**{key: options.get(key, value) for key, value in edm.items()})
    if sampler == "restart":  # the churn window and the intervals, against the grid when its size is known
        churn = {"s_churn": 0.0, "s_tmin": RESTART_S_TMIN, "s_tmax": RESTART_S_TMAX, "s_noise": 1.0}
        check_edm_options(**{key: options.get(key, value) for key, value in churn.items()})
        check_option("gamma", options.get("gamma", RESTART_GAMMA))
        if "intervals" in options:
            parse_intervals(options["intervals"])
            if steps is not None:
                ts = time_grid(sde, steps, 1e-3 if t_min is None else t_min, grid or "default", t_max, "restart")
                _, _, levels, top = level_grid(sde, ts, "cpu")
                snap_intervals(options["intervals"], levels, top)
    if sampler == "sa_solver":
        sa = {"predictor_order": 3, "corrector_order": 4, "tau": 1.0, "tau_sigma_min": TAU_SIGMA_MIN,
              "tau_sigma_max": TAU_SIGMA_MAX, "lower_order_final": "none", "rescale": True,
              "tau_at": "end"}  # fmt: skip
        check_sa_options(**{key: options.get(key, value) for key, value in sa.items()})
        if "denoise" in options:
            check_option("denoise", options["denoise"])
    if options.get("predictor") == "none" and options.get("corrector") == "none":
        raise ValueError("predictor 'none' with corrector 'none' does nothing; choose at least one")
    if sampler == "dpm_solver":
        check_dpm_solver_combination(
            options.get("prediction", "data"),
            options.get("eta", 0.0),
            options.get("method", "multistep"),
            options.get("inner", "logsnr"),
            options.get("order", 2),
            options.get("solver_type", "midpoint"),
        )
    if sampler == "pc" and steps is not None:  # the pc sampler's defaults for what is not given
        check_pc_combination(sde, options.get("predictor", "reverse_diffusion"), options.get("loop", "predictor_first"),
                             int(steps) + 1)  # fmt: skip


def options_from_config(sampler: str, sampling: Mapping) -> dict:
    """The sampler's keyword options read from a mapping with the config's `sampling` keys (plain data); a key
    set to "default" (or absent) leaves the sampler's own default."""
    check_choice("sampler", sampler, SAMPLER_OPTIONS)
    items = SAMPLER_OPTIONS[sampler].items()
    return {option: sampling[key] for option, key in items if sampling.get(key, "default") != "default"}
