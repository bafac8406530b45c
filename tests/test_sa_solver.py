"""SA-Solver (samplers/sa_solver.py) against its authors' own code: numbers scxue/SA-Solver's `sa_solver.py` wrote
(tests/fixtures/make_sa_solver.py), its few_steps mode on the continuous VP path, both predictions, two grids,
tau on and off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "sa_solver.pt", weights_only=True)
MIXTURE = GaussianMixture(
    torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    torch.tensor([[1.5, -1.0], [-2.0, 1.0], [0.5, 2.5]], dtype=torch.float64),
    torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
)


@pytest.mark.parametrize("key", sorted(FIXTURE["runs"]))
def test_equals_the_authors_few_steps_mode(key):
    """Its tau(t) = 1 on 0.2 <= t <= 0.8 is our window between the noise levels at t = 0.2 and 0.8, decided by the
    level each step ends at, its last step deterministic (tau_at="end", the default); its few-step mode lowers the
    orders at the end (lower_order_final="last") and stops at t_min without denoising. Its first noise draw is
    never used: ours draws one less. Float64 on its own grid: 1e-13 in the data form, 1e-10 in the noise form
    (e^{-lambda} weights)."""
    prediction, _, p, c, _, tau = key.split("_")
    sde = make_sde("vp")
    alpha, sigma = sde.marginal(torch.tensor([0.2, 0.8], dtype=torch.float64))
    low, high = (sigma / alpha).tolist()
    x_T = FIXTURE["x_T"]
    g = torch.Generator().manual_seed(FIXTURE["seed"])
    torch.randn(x_T.shape, generator=g, dtype=x_T.dtype)  # its unused first draw
    ours = SAMPLERS["sa_solver"](
        MIXTURE.score_fn(sde),
        sde,
        x_T,
        FIXTURE["grids"][key],
        predictor_order=int(p),
        corrector_order=int(c),
        tau=1.0 if tau == "tau1" else 0.0,
        tau_sigma_min=low * (1 - 1e-9),
        tau_sigma_max=high * (1 + 1e-9),
        prediction="data" if prediction == "data" else "noise",
        lower_order_final="last",
        denoise=False,
        generator=g,
    )
    tol = 1e-12 if prediction == "data" else 1e-9
    torch.testing.assert_close(ours, FIXTURE["runs"][key], rtol=tol, atol=tol)
