"""Sampler settings measured to be badly biased on the exact score, and the warning a user gets for them.

The rules come from `bench/defaults.py` (bench/results/defaults_oracle.md, docs/samplers.md): at their documented
step counts these (sampler, path, grid) combinations miss the exact answer of the Gaussian-mixture oracle by
10-10,000 standard errors in 2-D or by 30 % to 100x in the 784-D spread, where the path's default grid is within a
few per cent. The defaults never pick them; a user who does is warned (once per run), not refused.
"""

from __future__ import annotations

from samplers import SOLVER_SAMPLERS, default_grid

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
        ("edm",),
        ("cosine",),
        "quadratic",
        "EDM's sampler on the cosine chain's quadratic grid (measured max |z| 99 at 20 steps, 2450 without churn)",
    ),
    (
        SOLVER_SAMPLERS,
        ("edm",),
        "quadratic",
        "quadratic in t = sigma is too coarse at small noise (measured max |z| 33-730 at 10-50 steps)",
    ),
]


def bias_warning(sampler: str, path: str, grid: str) -> str | None:
    """A one-line warning if (sampler, path name, grid) is a measured badly biased combination, else None."""
    for samplers, paths, bad_grid, reason in RULES:
        if sampler in samplers and path in paths and grid == bad_grid:
            return (
                f"sampler {sampler!r} on the {path!r} path with grid {grid!r} is biased: {reason}; "
                "the path's default grid avoids it (docs/samplers.md)"
            )
    return None


def config_bias_warning(cfg) -> str | None:
    """bias_warning for a config's sampling section ("default" resolved per sampler and path)."""
    from compose.build import make_sde_from_config

    grid = cfg.sampling.grid
    if grid == "default":
        grid = default_grid(make_sde_from_config(cfg), cfg.sampling.sampler)
    return bias_warning(cfg.sampling.sampler, cfg.sde.name, grid)
