"""RePaint (Lugmayr et al. 2022): inpainting by resampling. The known part is re-noised from the data at every step,
the unknown part follows the reverse chain, and every `jump_length` steps the whole image is sent `jump_length`
levels back up by the forward kernel and denoised again (`jump_n_sample` times in all), so that the unknown part
has time to agree with the known one. Plain replacement (`models.guidance.inpaint`, jump_n_sample = 1) leaves it
biased toward the unconditional distribution.

The walk over the grid's levels is the authors' `get_schedule_jump` (RePaint's guided_diffusion/scheduler.py):
level l is ts[len(ts) - 1 - l], level -1 the data, which the last step reaches by Tweedie's denoising. A down move
is a DDIM step with `eta` (eta = 1: the ancestral step with the posterior variance, the paper's); an up move draws
from the exact forward kernel p(x_s | x_t) of the path (`sde.transition`; from the data, `sde.perturb`).
`replace` says where the known part is put in: "after" each step at the step's new level (the paper's Alg. 1, and
diffusers' RePaintScheduler, whose one noise draw per step serves both parts), or "before" each step at its own
level, the first step excepted (the authors' code, which draws the step's noise, then the known part's). Both
give the unknown part the same distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time

from .base import check_choice, check_grid, check_option, check_positive, randn_like
from .ddim import ddim_step

REPLACE = ("after", "before")


def repaint_levels(n_levels: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """The authors' resampling walk over levels n_levels - 1 .. 0 and the data (-1): down one level at a time, and at
    each level j = 0, J, 2J, ... < n_levels - J, jump_n_sample - 1 times back up J levels (RePaint's
    `get_schedule_jump` with n_sample = 1, as in all its configs). Model calls: the number of down moves."""
    check_positive("RePaint levels", n_levels, integer=True)
    check_positive("RePaint jump_length", jump_length, integer=True)
    check_positive("RePaint jump_n_sample", jump_n_sample, integer=True)
    jumps = {j: jump_n_sample - 1 for j in range(0, n_levels - jump_length, jump_length)}
    t, walk = n_levels - 1, [n_levels - 1]
    while t >= 0:
        t -= 1
        walk.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                walk.append(t)
    return walk


def check_levels(levels: list[int], n_levels: int) -> None:
    """Raise ValueError unless `levels` starts at the grid's top level, ends at the data (-1) and moves by one level
    at a time within [-1, n_levels - 1] (the authors' `_check_times`)."""
    levels = [int(v) for v in levels]
    if len(levels) < 2 or levels[0] != n_levels - 1 or levels[-1] != -1:
        raise ValueError(
            f"a RePaint walk must start at the top level {n_levels - 1} and end at -1 (the data), got "
            f"{levels[:1]} ... {levels[-1:]}"
        )
    for a, b in zip(levels[:-1], levels[1:]):
        if abs(a - b) != 1 or not -1 <= b <= n_levels - 1:
            raise ValueError(f"a RePaint walk moves one level at a time within [-1, {n_levels - 1}], got {a} -> {b}")


def repaint_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    x_known: Tensor,
    mask: Tensor,
    *,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    eta: float = 1.0,
    replace: str = "after",
    levels: list[int] | None = None,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Impute the unknown entries (mask = 0) of x_known from x = x_T by RePaint over the grid ts (its len(ts) levels;
    `levels` replaces the authors' walk by another, e.g. diffusers'). NFE = the walk's down moves, about
    jump_n_sample x len(ts). The known entries of the result are x_known itself. `callback` sees every move."""
    check_grid(sde, ts)
    check_option("eta", eta)
    check_choice("RePaint replace", replace, REPLACE)
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError("inpainting mask must hold only 0 (unknown) and 1 (known)")
    n = len(ts)
    walk = repaint_levels(n, jump_length, jump_n_sample) if levels is None else [int(v) for v in levels]
    check_levels(walk, n)
    ts = ts.to(x.device, torch.float64)
    mask = mask.to(x.device, x.dtype)
    x_known = x_known.to(x.device, x.dtype)

    def time(level: int) -> Tensor:
        return as_time(float(ts[n - 1 - level]), x)

    def known_at(level: int, noise: Tensor) -> Tensor:
        return x_known if level < 0 else sde.perturb(x_known, time(level), noise)

    first = True
    for i, (a, b) in enumerate(zip(walk[:-1], walk[1:])):
        noise = randn_like(x, generator)
        if b < a:  # reverse step a -> b
            t = time(a)
            if replace == "before" and not first:
                x = mask * known_at(a, randn_like(x, generator)) + (1 - mask) * x
            score = score_fn(x, t)
            x = sde.denoise(x, t, score) if b < 0 else ddim_step(sde, x, t, time(b), score, eta, generator, noise)
            if replace == "after":
                x = mask * known_at(b, noise) + (1 - mask) * x
            first = False
        elif a < 0:  # from the data up to the first level
            x = sde.perturb(x, time(b), noise)
        else:  # forward kernel a -> b
            scale, std = sde.transition(time(a), time(b))
            x = append_dims(scale, x.ndim) * x + append_dims(std, x.ndim) * noise
        if callback is not None:
            callback({"i": i, "t": ts[n - 1 - b] if b >= 0 else ts.new_zeros(()), "x": x})
    return mask * x_known + (1 - mask) * x
