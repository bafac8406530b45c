"""The likelihood against score_sde_pytorch's own `get_likelihood_fn`, through numbers its code wrote
(tests/fixtures/make_score_sde_runs.py, peer commit cb1f359): scipy RK45 on the probability-flow ODE of its VP and
VE SDEs, N(m, 0.5^2 I) data of shape (1, 2, 2), its Rademacher probe, rtol = atol = 1e-3 and 1e-5.

* bench/likelihood_compare.py's re-implementation of that algorithm (the anchor of docs/likelihood.md's comparison
  with score_sde) takes the same number of function evaluations and gives the same bits/dim and latents.
* Our own integrator (exponential, 1e-5) gives the same bits/dim as its 1e-5 run, to its solver error: for this
  isotropic Gaussian the probe's estimate is exact, so what is left is the two solvers' error.
"""

import math
from pathlib import Path

import pytest
import torch

from bench.likelihood_compare import score_sde_likelihood
from data.toy import GaussianMixture
from likelihood import log_likelihood_per_probe
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "score_sde_likelihood.pt", weights_only=True)
DATA = GaussianMixture(torch.ones(1), FIXTURE["mean"].reshape(1, -1).double(), torch.tensor([FIXTURE["std"]]),
                       shape=(1, 2, 2))  # fmt: skip
PATHS = {"vp": ("vp", {"beta_min": 0.1, "beta_max": 20.0}), "ve": ("ve", {"sigma_min": 0.01, "sigma_max": 50.0})}
OFFSET = 8.0  # score_sde adds 7 - inverse_scaler(-1) bits/dim; its inverse scaler here is the identity


def bits(logp: torch.Tensor) -> torch.Tensor:
    return -logp / (4 * math.log(2)) + OFFSET


def setup(case: dict):
    name, kwargs = PATHS[case["path"]]
    sde = make_sde(name, **kwargs)
    score = DATA.score_fn(sde)
    return sde, lambda x, t: score(x.double(), t.double()).to(x.dtype)


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"{c['path']}-{c['tol']:g}")
def test_the_benchmarks_replica_is_score_sdes_algorithm(case):
    sde, score_fn = setup(case)
    logp, z, nfe = score_sde_likelihood(score_fn, sde, case["data"], case["probe"], case["tol"], case["tol"], 1e-5)
    assert nfe == case["nfe"]
    torch.testing.assert_close(bits(logp).float(), case["bpd"], rtol=0, atol=1e-5)
    torch.testing.assert_close(z.float(), case["z"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [c for c in FIXTURE["cases"] if c["tol"] == 1e-5], ids=lambda c: c["path"])
def test_our_integrator_gives_score_sdes_bits_per_dim(case):
    sde, score_fn = setup(case)
    logp, _, _ = log_likelihood_per_probe(score_fn, sde, case["data"].double(), t_min=1e-5, rtol=1e-5, atol=1e-5,
                                          method="exponential", generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(bits(logp[:, 0]).float(), case["bpd"], rtol=0, atol=1e-4)
