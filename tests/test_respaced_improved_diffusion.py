"""Ancestral sampling on a strided grid against improved-diffusion's own respacing (Nichol & Dhariwal 2021, Sec. 4),
through numbers its code wrote (tests/fixtures/make_improved_diffusion_respaced.py, openai/improved-diffusion commit
1bc7bbb): `space_timesteps` and `SpacedDiffusion.p_sample_loop` on its linear and cosine 1000-step chains respaced
to 50 and 25 steps, fixed-small and fixed-large variances, no clipping, the exact eps of Gaussian data, the same
noise.

Respacing keeps the steps k in its set and gives the shortened chain the betas 1 - abar_k / abar_k' between kept
neighbours. Ours needs no new chain: `ancestral` steps between any two times by the path's own transition, so the
grid (k + 1) / N over the kept k is the respaced chain, with `variance="posterior"` its fixed-small and `"forward"`
its fixed-large variance; its last step (from k = 0, noise-free) is our final denoising at t = 1 / N.
"""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "improved_diffusion_respaced.pt", weights_only=True)
DATA = GaussianMixture(
    torch.ones(1, dtype=torch.float64), FIXTURE["mean"].reshape(1, -1), torch.tensor([FIXTURE["std"]]).double()
)
VARIANCE = {"FIXED_SMALL": "posterior", "FIXED_LARGE": "forward"}


@pytest.mark.parametrize("case", sorted(FIXTURE["cases"]))
def test_ancestral_on_the_kept_steps_is_its_respaced_chain(case):
    schedule, _, var_type = case.split("_", 2)
    run = FIXTURE["cases"][case]
    sde = make_sde("ddpm" if schedule == "linear" else "cosine", N=FIXTURE["n"])
    ts = (run["kept"].flip(0).double() + 1) / FIXTURE["n"]
    x_T = FIXTURE["x_T"].reshape(len(FIXTURE["x_T"]), -1)
    ours = SAMPLERS["ancestral"](
        DATA.score_fn(sde),
        sde,
        x_T,
        ts,
        variance=VARIANCE[var_type],
        generator=torch.Generator().manual_seed(FIXTURE["seed"]),
    )
    theirs = run["x0"].reshape(ours.shape).double()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6)  # its coefficients are float32: 4e-7 here


@pytest.mark.parametrize("count", sorted(FIXTURE["space_timesteps"], key=int))
def test_respaced_steps_and_the_bounds_grid_are_its_space_timesteps(count):
    """Its accumulated float stride rounded half to even (at K = 7 and 25 a plain linspace rounds a tie the other
    way); the bound's default grid on a chain with K < N steps is that set."""
    from likelihood import bound_grid
    from sde.discrete import respaced_steps

    theirs = (FIXTURE["space_timesteps"][count] + 1).tolist()  # its 0-based steps as our 1-based ones
    assert respaced_steps(FIXTURE["n"], int(count)) == theirs
    for name in ("ddpm", "cosine"):
        grid = bound_grid(make_sde(name, N=FIXTURE["n"]), int(count))
        assert torch.round(grid * FIXTURE["n"]).long().tolist() == theirs


def test_respaced_steps_refuses_counts_outside_the_chain():
    from sde.discrete import respaced_steps

    with pytest.raises(ValueError, match=r"cannot keep 0 of a chain's 10 steps; allowed: 1..10"):
        respaced_steps(10, 0)
    with pytest.raises(ValueError, match=r"cannot keep 11 of"):
        respaced_steps(10, 11)


def test_the_respaced_grid_runs_its_respaced_chain_by_name():
    """`grid="respaced"` (`--config.sampling.grid=respaced`) is the kept times, so `run_sampler` reproduces its run."""
    from samplers import run_sampler

    run = FIXTURE["cases"]["linear_50_FIXED_SMALL"]
    sde = make_sde("ddpm", N=FIXTURE["n"])
    x_T = FIXTURE["x_T"].reshape(len(FIXTURE["x_T"]), -1)
    generator = torch.Generator().manual_seed(FIXTURE["seed"])
    ours = run_sampler("ancestral", DATA.score_fn(sde), sde, x_T, steps=49, grid="respaced", t_min=1 / FIXTURE["n"],
                       variance="posterior", generator=generator)  # fmt: skip
    torch.testing.assert_close(ours, run["x0"].reshape(ours.shape), rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    "path, steps, t_min, message",
    [
        ("vp", 10, 1e-3, r"time grid 'respaced' needs a discrete chain \(ddpm, cosine\), not VPSDE"),
        ("ddpm", 10, 1e-2, r"runs from T = 1.0 to the chain's first step T / N = 0.001, got t_max = 1.0, t_min = 0.01"),
        ("ddpm", 1000, 1e-3, r"keeps at most the chain's 1000 steps, got steps = 1000"),
    ],
)
def test_the_respaced_grid_refuses_what_is_not_a_chains_steps(path, steps, t_min, message):
    from samplers import time_grid

    with pytest.raises(ValueError, match=message):
        time_grid(make_sde(path), steps, t_min, "respaced")
