"""Samplers for score-based diffusion: ancestral, annealed Langevin, predictor-corrector, probability-flow ODE,
DDIM, DPM-Solver++, UniPC, SA-Solver, PNDM, linear multistep (LMS) and EDM's stochastic sampler (Ho et al. 2020;
Song & Ermon 2019; Song et al. 2021; Song et al. 2021a; Lu et al. 2022b; Zhao et al. 2023; Xue et al. 2023; Liu et
al. 2022; Karras et al. 2022).

Every sampler is a plain function `sampler(score_fn, sde, x_T, ts, *, generator=None, callback=None, **options)
-> x_0` over a decreasing time grid ts (see `grids`); it sees only `score_fn(x, t)` and the SDE. After every
step it calls `callback({"i": step index, "t": the step's new time, "x": the current samples})`; a callback may
change info["x"] in place (a projection, e.g. inpainting; RePaint, `repaint_sample`, is an inpainting sampler of
its own, which walks the grid down and back up). Adaptive solvers (ODE, DPM-Solver-12 / -23) call it
once, at the end. `run_sampler` builds the grid by name and checks every option before any work; the final Tweedie
denoising (`denoise=True`, one more score evaluation) is every sampler's default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn
from sde.base import STEP_VARIANCES as VARIANCES  # the ancestral step's variance: "forward" (beta_t), "posterior"
from sde.ode_methods import ODE_METHODS

from .base import ODE_VARIABLES, ancestral_step, final_denoise
from .ddim import ddim_sample
from .dpm_solver import dpm_solver_sample
from .edm import edm_sample
from .grids import CHAIN_GRIDS, GRIDS, SOLVER_SAMPLERS, default_grid, time_grid
from .langevin import CORRECTORS, ald_sample
from .lms import lms_sample
from .nfe import CountingScoreFn, count_nfe
from .ode import ode_sample, solve_probability_flow
from .options import DEFAULT_STEPS, SAMPLER_OPTIONS, check_sampler_options, options_from_config, steps_or_default
from .pc import PREDICTORS, ancestral_sample, pc_sample
from .pndm import pndm_sample
from .repaint import repaint_levels, repaint_sample
from .restart import restart_sample
from .sa_solver import sa_solver_sample
from .unipc import unipc_sample

SAMPLERS = {
    "ancestral": ancestral_sample,
    "ald": ald_sample,
    "pc": pc_sample,
    "ode": ode_sample,
    "ddim": ddim_sample,
    "dpm_solver": dpm_solver_sample,
    "unipc": unipc_sample,
    "sa_solver": sa_solver_sample,
    "pndm": pndm_sample,
    "lms": lms_sample,
    "edm": edm_sample,
    "restart": restart_sample,
}


def run_sampler(
    name: str,
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    steps: int,
    grid: str = "default",
    t_min: float = 1e-3,
    t_max: float | None = None,
    generator: torch.Generator | None = None,
    callback=None,
    **options,
) -> Tensor:
    """Check the options, build the named time grid (T -> t_min, `steps` steps; "default": the path's own for this
    sampler, `samplers.default_grid`) and run the named sampler."""
    check_sampler_options(name, sde, steps=steps, grid=grid, t_min=t_min, t_max=t_max, **options)
    ts = time_grid(sde, steps, t_min, grid, t_max, sampler=name)
    return SAMPLERS[name](score_fn, sde, x, ts, generator=generator, callback=callback, **options)


__all__ = [
    "CHAIN_GRIDS",
    "CORRECTORS",
    "DEFAULT_STEPS",
    "CountingScoreFn",
    "GRIDS",
    "ODE_METHODS",
    "ODE_VARIABLES",
    "PREDICTORS",
    "SAMPLERS",
    "SAMPLER_OPTIONS",
    "SOLVER_SAMPLERS",
    "VARIANCES",
    "ald_sample",
    "ancestral_sample",
    "ancestral_step",
    "check_sampler_options",
    "count_nfe",
    "default_grid",
    "ddim_sample",
    "dpm_solver_sample",
    "edm_sample",
    "lms_sample",
    "final_denoise",
    "ode_sample",
    "options_from_config",
    "pc_sample",
    "pndm_sample",
    "repaint_levels",
    "repaint_sample",
    "restart_sample",
    "run_sampler",
    "sa_solver_sample",
    "solve_probability_flow",
    "steps_or_default",
    "time_grid",
    "unipc_sample",
]
