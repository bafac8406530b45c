"""SDEdit (Meng et al. 2022) against closed forms on Gaussian data N(m, s^2 I) with the exact score: from a guide
x_g perturbed to t0 (x_t0 ~ N(alpha x_g, sigma^2 I)), a stochastic sampler draws x_0 ~ p(x_0 | x_t0), whose mixture
over x_t0 is Gaussian with mean m + k alpha (x_g - m) and variance s^2 sigma^2 / v + k^2 sigma^2 (v = alpha^2 s^2 +
sigma^2, k = alpha s^2 / v); the probability-flow ODE maps x_t0 by the exact flow map."""

import math

import pytest
import torch

from data.toy import GaussianMixture
from models.sdedit import sdedit
from samplers import SAMPLERS, time_grid
from sde import make_sde

M, S = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5
DATA = GaussianMixture(torch.ones(1, dtype=torch.float64), M[None], torch.tensor([S], dtype=torch.float64))
GUIDE = torch.tensor([2.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("sde_name, t0", [("vp", 0.2), ("ve", 0.45)])
def test_a_stochastic_sampler_draws_the_data_given_the_perturbed_guide(sde_name, t0):
    sde = make_sde(sde_name)
    n = 4000
    ts = time_grid(sde, 400, 1e-3, "uniform", t_max=t0)
    x = sdedit(SAMPLERS["ancestral"], DATA.score_fn(sde), sde, GUIDE.expand(n, 2).clone(), ts,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    alpha, sigma = (float(v) for v in sde.marginal(torch.tensor([t0], dtype=torch.float64)))
    v = alpha**2 * S**2 + sigma**2
    k = alpha * S**2 / v
    mean = M + k * alpha * (GUIDE - M)
    var = S**2 * sigma**2 / v + k**2 * sigma**2
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / n)
    assert float((x.mean(0) - mean).abs().max()) < 5 * se_mean
    assert float((x.var(0) - var).abs().max()) < 5 * se_var
    # Neither the guide back nor a plain sample of the data: the test can fail either way.
    assert float((mean - GUIDE).abs().min()) > 10 * se_mean and float((mean - M).abs().min()) > 10 * se_mean


def test_the_probability_flow_ode_maps_the_perturbed_guide_by_the_exact_flow():
    sde = make_sde("vp")
    ts = time_grid(sde, 60, 1e-3, "uniform", t_max=0.5)
    guide = GUIDE.expand(64, 2).clone()
    x = sdedit(SAMPLERS["ode"], DATA.score_fn(sde), sde, guide, ts, generator=torch.Generator().manual_seed(1),
               method="rk4", variable="t", denoise=False)  # fmt: skip
    noise = torch.randn(guide.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_t0 = sde.perturb(guide, torch.full((64,), 0.5, dtype=torch.float64), noise)
    torch.testing.assert_close(x, DATA.flow_map(x_t0, 0.5, 1e-3, sde), rtol=1e-6, atol=1e-6)


def test_sdedit_refuses_a_start_outside_the_path():
    sde = make_sde("vp")
    with pytest.raises(ValueError, match=r"SDEdit starts at t0 = ts\[0\] in \(0, T = 1.0\], got 1.5"):
        sdedit(SAMPLERS["ancestral"], DATA.score_fn(sde), sde, GUIDE[None], torch.tensor([1.5, 0.5]))
