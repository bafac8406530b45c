"""SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations",
Alg. 1): perturb a guide image (a stroke painting, a corrupted or an out-of-domain image) to an intermediate time t0
by the forward process, x_t0 = alpha_t0 x_guide + sigma_t0 noise, then run any sampler from t0 down to t_min. Small
t0 keeps the guide's detail, large t0 gives a realistic sample that keeps only its coarse layout.

With the exact score, a stochastic sampler returns a draw from p(x_0 | x_t0), the data given the perturbed guide
(the reverse SDE from t0 simulates that conditional), and the probability-flow ODE the deterministic image of
x_t0 under its flow; `tests/test_sdedit.py` checks both against closed forms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sde import SDE, ScoreFn, as_time


def sdedit(
    sampler: Callable,
    score_fn: ScoreFn,
    sde: SDE,
    x_guide: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    **options,
) -> Tensor:
    """SDEdit with any sampler of `samplers.SAMPLERS` on the grid ts, which starts at t0 = ts[0] (e.g.
    `samplers.time_grid(sde, steps, t_min, kind, t_max=t0)`): x_guide is perturbed to t0, then sampled down.
    The generator draws the perturbation first, then the sampler's noise."""
    t0 = float(ts[0])
    if not 0 < t0 <= float(sde.T):
        raise ValueError(f"SDEdit starts at t0 = ts[0] in (0, T = {sde.T}], got {t0}")
    noise = torch.randn(x_guide.shape, generator=generator, device=x_guide.device, dtype=x_guide.dtype)
    x = sde.perturb(x_guide, as_time(t0, x_guide), noise)
    return sampler(score_fn, sde, x, ts, generator=generator, **options)
