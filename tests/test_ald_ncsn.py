"""Annealed Langevin dynamics against NCSN's own code, through iterates it wrote (tests/fixtures/make_ncsn_ald.py,
ermongroup/ncsn commit 7f27f4a): its `anneal_Langevin_dynamics` on its geometric ladder sigma = 1 -> 0.01 (L = 10),
5 steps per level, step_lr = 2e-5, with the exact score of N(0.5, 0.2^2 I) data, from the same torch.rand start and
the same noise stream. Its code steps x + d grad + sqrt(2 d) z with d = step_lr (sigma_i / sigma_L)^2, where the
paper's Alg. 1 (ours) steps x + a_i / 2 grad + sqrt(a_i) z with a_i = eps (sigma_i / sigma_L)^2: the code is the
paper with eps = 2 step_lr. So `ald` with eps = 4e-5 (and no final denoising, which NCSN added only in v2) passes
through every iterate NCSN's code does, and the paper's eps = 2e-5 does not."""

from pathlib import Path

import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "ncsn_ald.pt", weights_only=True)
SHAPE = tuple(FIXTURE["x_T"].shape)
DATA = GaussianMixture(torch.ones(1), torch.full((1, 4), FIXTURE["mean"]), torch.tensor([FIXTURE["std"]]),
                       shape=SHAPE[1:])  # fmt: skip
VE = make_sde("ve", sigma_min=float(FIXTURE["sigmas"][-1]), sigma_max=float(FIXTURE["sigmas"][0]))


def our_iterates(eps: float) -> torch.Tensor:
    """Every input our ALD passes to the score, from NCSN's start and noise stream."""
    inputs, score = [], DATA.score_fn(VE)

    def recording(x, t):
        inputs.append(x.clone())
        return score(x.double(), t.double()).float()

    g = torch.Generator().manual_seed(FIXTURE["seed"])
    x_T = torch.rand(SHAPE, generator=g)  # NCSN's runner starts from uniform noise; the same draw
    torch.testing.assert_close(x_T, FIXTURE["x_T"], rtol=0, atol=0)
    ts = torch.linspace(1.0, 0.0, len(FIXTURE["sigmas"]), dtype=torch.float64)  # VE's geometric ladder
    torch.testing.assert_close(VE.marginal(ts)[1], FIXTURE["sigmas"], rtol=1e-12, atol=0)
    SAMPLERS["ald"](recording, VE, x_T, ts, eps=eps, n_steps=FIXTURE["n_steps"], denoise=False, generator=g)
    return torch.stack(inputs)


def test_ald_with_twice_step_lr_is_ncsns_code():
    ours = our_iterates(2 * FIXTURE["step_lr"])
    assert ours.shape == FIXTURE["inputs"].shape  # 10 levels x 5 steps
    torch.testing.assert_close(ours, FIXTURE["inputs"], rtol=1e-5, atol=1e-6)


def test_the_papers_step_is_half_the_codes():
    ours = our_iterates(FIXTURE["step_lr"])
    assert (ours[-1] - FIXTURE["inputs"][-1]).abs().max() > 1e-2
