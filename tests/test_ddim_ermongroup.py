"""DDIM against its authors' own code, through numbers it wrote (tests/fixtures/make_ddim_steps.py, ermongroup/ddim
commit e8df66c): `generalized_steps` with eta 0 and 1 on its "uniform" and "quad" skip sequences (S = 10 and 25 of
N = 1000 linear-beta steps), the exact eps of Gaussian data as the model, the same noise. Its 0-based step k is our
chain time (k + 1) / N, so its skip sequence seq is our grid (seq + 1) / N, reversed; its last step (to abar = 1) is
our final denoising at t = 1 / N. Every iterate is compared.

Its skips are not our named grids: its "uniform" starts at step N - N / S (not at T), its "quad" at int(0.8 N) and
rounds each time down to an integer step (ours: t_min + (T - t_min) u^2 from T). `docs/samplers.md` says so; here
the grid is passed as times.
"""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "ddim_steps.pt", weights_only=True)
SDE = make_sde("ddpm")  # N = 1000, betas 1e-4 .. 0.02: its "linear" schedule
DATA = GaussianMixture(
    torch.ones(1, dtype=torch.float64), FIXTURE["mean"].reshape(1, -1), torch.tensor([FIXTURE["std"]]).double()
)


def test_its_betas_are_ours():
    torch.testing.assert_close(SDE.betas.double(), FIXTURE["betas"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", sorted(FIXTURE["cases"]))
def test_ddim_equals_generalized_steps(case):
    run = FIXTURE["cases"][case]
    eta = float(case.endswith("eta1"))
    ts = (run["seq"].flip(0).double() + 1) / FIXTURE["n"]
    x_T = FIXTURE["x_T"].reshape(len(FIXTURE["x_T"]), -1)
    iterates = []
    ours = SAMPLERS["ddim"](
        DATA.score_fn(SDE),
        SDE,
        x_T,
        ts,
        eta=eta,
        generator=torch.Generator().manual_seed(FIXTURE["seed"]),
        callback=lambda info: iterates.append(info["x"]),
    )
    theirs = run["xs"].reshape(run["xs"].shape[0], run["xs"].shape[1], -1)
    torch.testing.assert_close(torch.stack(iterates), theirs[1:-1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours, theirs[-1], rtol=1e-9, atol=1e-9)
