"""Sampler settings measured to be badly biased on the exact score, and the warning a user gets for them.

The rules come from `bench/defaults.py` (bench/results/defaults_oracle.md, docs/samplers.md): at their documented
step counts these (sampler, path, grid) combinations miss the exact answer of the Gaussian-mixture oracle by
10-10,000 standard errors in 2-D or by 30 % to 100x in the 784-D spread, where the path's default grid is within a
few per cent. The defaults never pick them; a user who does is warned (once per run), not refused.
"""

from __future__ import annotations

import inspect

from samplers import SAMPLERS, SOLVER_SAMPLERS, default_grid, options_from_config

_NOT_VE = ("vp", "subvp", "ddpm", "cosine", "edm", "rectified_flow")
# (samplers, paths, grid, reason)
RULES = [
    (
        SOLVER_SAMPLERS,
        _NOT_VE,
        "uniform",
        "uniform-in-t leaves too few steps at low noise for a 10-50-step solver (measured: 2M at 20 steps spreads "
        "784-D samples 36-250 % too wide)",
    ),
    (
        SOLVER_SAMPLERS,
        ("cosine", "rectified_flow"),
        "karras",
        "the Karras grid spends its steps at this path's huge top noise levels (measured max |z| 8-80 at 20 steps)",
    ),
    (
        ("ancestral", "pc", "ald", *SOLVER_SAMPLERS),
        ("edm",),
        "uniform",
        "uniform in t = sigma spends almost no steps at small noise (measured max |z| 60-15,000)",
    ),
    (
        ("edm", "restart"),
        ("cosine",),
        "quadratic",
        "EDM's sampler on the cosine chain's quadratic grid (measured max |z| 99 at 20 steps, 2450 without churn)",
    ),
    (
        ("pndm",),
        ("cosine", "rectified_flow"),
        "quadratic",
        "PNDM's equal-step Adams-Bashforth weights meet this grid's first step of ~7 in lambda (measured max |z| "
        "4e3-1.6e13 at 50 NFE with the pseudo Runge-Kutta start, 66-8.8e4 at 20 with PLMS)",
    ),
    (
        SOLVER_SAMPLERS,
        ("edm",),
        "quadratic",
        "quadratic in t = sigma is too coarse at small noise (measured max |z| 33-730 at 10-50 steps)",
    ),
]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


_positive.__name__ = "> 0"  # how a rule's message names the condition

# (sampler, options that must all hold (a value, or a predicate named by its __name__), paths, grid (None: any),
# reason, what avoids it): combinations biased by an option.
OPTION_RULES = [
    (
        "unipc",
        {"prediction": "noise", "variant": "bh2"},
        ("cosine", "rectified_flow"),
        "quadratic",
        "the noise form's B(h) = e^h - 1 is ~6,000 on this grid's first step (8.7 in lambda on the cosine chain; "
        "measured max |z| 963 at 50 NFE, 1.6e9 at 5)",
        "the log-SNR grid, variant bh1 or the data form avoids it",
    ),
    (
        "dpm_solver",
        {"prediction": "noise", "method": "fast"},
        ("cosine", "rectified_flow"),
        "quadratic",
        "DPM-Solver-fast calls at the grid's own times, and this grid's first step takes most of its first 3-call "
        "step in lambda (7.2 of 8.2 on the cosine chain at 49 calls), where the noise form's e^h - 1 is ~3,800 "
        "(measured max |z| 4e7 at 50 NFE on the cosine chain, 1.5e5 at 20 on rectified flow)",
        "the log-SNR grid, method singlestep or the data form avoids it",
    ),
    (
        "dpm_solver",
        {"prediction": "noise", "method": "singlestep", "eta": 1.0},
        ("cosine",),
        "quadratic",
        "the ancestral DPM-Solver-2 (DPM2 a) at eta = 1 steps down to lambda_next + h, twice this grid's first step "
        "of ~7 in lambda, where the noise form's e^h - 1 is ~1e6 (measured max |z| 1.3e6 / 371 / 5.9 at 10 / 25 / "
        "50 steps; eta 0.3-0.7 within bounds)",
        "the data form (DPM++ 2S a) or eta <= 0.7 avoids it",
    ),
    (
        "dpm_solver",
        {"prediction": "noise", "method": "multistep", "eta": _positive},
        ("cosine", "rectified_flow"),
        "quadratic",
        "SDE-DPM-Solver's noise term sigma_t sqrt(e^{2h} - 1) and its doubled e^h - 1 meet this grid's first step of "
        "~7 in lambda (measured max |z| 5e4 on the cosine chain and 22 on rectified flow at 40 steps, eta 1)",
        "the log-SNR grid or the data form (SDE-DPM-Solver++) avoids it",
    ),
    (
        "sa_solver",
        {"prediction": "noise", "tau": _positive},
        ("vp", "subvp", "ve", "ddpm", "cosine", "edm", "rectified_flow"),
        None,
        "the noise form's stochastic steps, (1 + tau^2) sigma_t (e^h - 1) on eps and tau sigma_t sqrt(e^{2h} - 1) on "
        "the noise, need many steps (measured on the 2-D mixture: mean log-density 23-3,300 nats below the data's at "
        "20 steps with orders 2 / 2, 1.3-1.6 at 40 with 3 / 4, within 0.01 only from 80-160)",
        "the data form (the default) or tau = 0 avoids it",
    ),
    (
        "dpm_solver",
        {"method": "adaptive_pid"},
        ("cosine", "rectified_flow"),
        None,  # any grid: only its ends are read
        "k-diffusion's controller weighs the error by max(|y_low|, |y_prev|) in y = x / alpha, and this path starts at "
        "sigma~ = 1e3-2e4, so after a large step the previous state's size sets the tolerance and coarse steps pass "
        "(measured max |z| 5.5 / 14.5 at its default tolerances, flow-map error 0.09 / 2e-4 at 1e-3 / 1e-4 where "
        "Lu et al.'s controller has 2e-5)",
        "method='adaptive' (Lu et al.'s controller, in x) avoids it",
    ),
]


def bias_warning(sampler: str, path: str, grid: str, options: dict | None = None) -> str | None:
    """A one-line warning if (sampler, path name, grid) is a measured badly biased combination, or is with these
    sampler options (keyword: value), else None."""
    for samplers, paths, bad_grid, reason in RULES:
        if sampler in samplers and path in paths and grid == bad_grid:
            return (
                f"sampler {sampler!r} on the {path!r} path with grid {grid!r} is biased: {reason}; "
                "the path's default grid avoids it (docs/samplers.md)"
            )
    options = options or {}
    for bad_sampler, bad_options, paths, bad_grid, reason, remedy in OPTION_RULES:
        if (sampler == bad_sampler and path in paths and bad_grid in (None, grid)
                and all(v(options.get(k)) if callable(v) else options.get(k) == v
                        for k, v in bad_options.items())):  # fmt: skip
            given = ", ".join(f"{k} {v.__name__}" if callable(v) else f"{k}={v!r}" for k, v in bad_options.items())
            where = f"the {path!r} path" + ("" if bad_grid is None else f" with grid {grid!r}")
            return f"sampler {sampler!r} with {given} on {where} is biased: {reason}; {remedy} (docs/samplers.md)"
    return None


def config_bias_warning(cfg) -> str | None:
    """bias_warning for a config's sampling section ("default" resolved per sampler and path)."""
    from compose.build import make_sde_from_config

    grid = cfg.sampling.grid
    if grid == "default":
        grid = default_grid(make_sde_from_config(cfg), cfg.sampling.sampler)
    options = options_from_config(cfg.sampling.sampler, cfg.sampling.to_dict())
    return bias_warning(cfg.sampling.sampler, cfg.sde.name, grid, {**option_defaults(cfg.sampling.sampler), **options})


def option_defaults(sampler: str) -> dict:
    """The sampler function's keyword defaults (what an option left out means)."""
    params = inspect.signature(SAMPLERS[sampler]).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
