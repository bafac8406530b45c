"""Importance sampling of t for likelihood weighting against closed forms (Song et al. 2021b).

For VP, lambda = g^2/sigma^2 = beta / (1 - exp(-B)) = d/dt log(exp(B) - 1); for sub-VP, lambda = beta (1 + exp(-B))
/ (1 - exp(-B)) = d/dt [2 log(exp(B) - 1) - B]. So the normaliser, the CDF of p ∝ lambda and E_p[weight h] for
h = sigma^2 (where lambda h = g^2 integrates to the variance increments) are all exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from losses.importance import likelihood_weight, sample_importance_time
from sde import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE

T_MIN = 1e-5


def antiderivative(sde, t):
    """int lambda dt up to a constant, exact for VP and sub-VP."""
    big_b = sde.beta_integral(t)
    log_em1 = torch.log(torch.expm1(big_b))
    return 2 * log_em1 - big_b if sde.name == "subvp" else log_em1


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE()], ids=lambda s: s.name)
def test_times_follow_lambda(sde):
    """Kolmogorov-Smirnov distance of 50000 draws to the exact CDF below 1.95 / sqrt(n) (the 0.1% level)."""
    n = 50_000
    t, _ = sample_importance_time(sde, n, T_MIN, torch.Generator().manual_seed(0))
    assert t.min() >= T_MIN and t.max() <= sde.T
    t = torch.sort(t.double()).values
    lo = antiderivative(sde, torch.tensor([T_MIN], dtype=torch.float64))
    cdf = (antiderivative(sde, t) - lo) / (antiderivative(sde, torch.tensor([sde.T], dtype=torch.float64)) - lo)
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = torch.maximum((ecdf - cdf).abs(), (ecdf - 1 / n - cdf).abs()).max().item()
    assert ks < 1.95 / math.sqrt(n), ks


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE()], ids=lambda s: s.name)
def test_weighted_objective_is_unbiased(sde):
    """E_p[weight] = int lambda / (T - t_min) and E_p[weight sigma^2] = int g^2 / (T - t_min), each within 4 s.e.;
    the weight is nearly constant (relative spread < 1%), which is the point of the importance sampling."""
    t, w = sample_importance_time(sde, 100_000, T_MIN, torch.Generator().manual_seed(1))
    t, w = t.double(), w.double()
    ends = torch.tensor([T_MIN, sde.T], dtype=torch.float64)
    total_lambda = antiderivative(sde, ends).diff().item()
    fine = torch.linspace(T_MIN, sde.T, 200_001, dtype=torch.float64)  # g^2 is smooth: trapezoid error ~1e-10
    total_g2 = torch.trapezoid(sde.sde(torch.zeros(len(fine), 1, dtype=torch.float64), fine)[1] ** 2, fine).item()
    span = sde.T - T_MIN
    assert w.std() / w.mean() < 0.01
    assert abs(w.mean().item() - total_lambda / span) < 4 * w.std().item() / math.sqrt(len(w)) + 1e-6
    h = w * sde.marginal(t)[1] ** 2
    assert abs(h.mean().item() - total_g2 / span) < 4 * h.std().item() / math.sqrt(len(h)), (h.mean(), total_g2 / span)


def test_vp_g2_integral_identity():
    """The quadrature used above against an exact integral: for VP, int g^2 = int beta = B(T) - B(t_min)."""
    sde = VPSDE()
    fine = torch.linspace(T_MIN, 1.0, 200_001, dtype=torch.float64)
    _, g = sde.sde(torch.zeros(len(fine), 1, dtype=torch.float64), fine)
    ends = torch.tensor([T_MIN, 1.0], dtype=torch.float64)
    assert torch.trapezoid(g**2, fine).item() == pytest.approx(sde.beta_integral(ends).diff().item(), rel=1e-8)


@pytest.mark.parametrize("sde", [VESDE(), DiscreteVPSDE(N=100)], ids=lambda s: s.name)
def test_other_sdes(sde):
    """VE: lambda is constant, so t is uniform and weight = lambda; DDPM's chain: mean weight = int lambda / span."""
    t, w = sample_importance_time(sde, 20_000, 1e-3, torch.Generator().manual_seed(2))
    assert t.min() >= 1e-3 and t.max() <= 1.0 and torch.isfinite(w).all()
    if sde.name == "ve":
        torch.testing.assert_close(w, likelihood_weight(sde, t.double()).float(), rtol=1e-4, atol=0)
        assert abs(t.double().mean().item() - 0.5005) < 4 * 0.2884 / math.sqrt(len(t))


def test_reproducible_and_checked():
    a = sample_importance_time(VPSDE(), 5, 1e-5, torch.Generator().manual_seed(3))
    b = sample_importance_time(VPSDE(), 5, 1e-5, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (5,)
    for kwargs, match in [({"batch": 0}, "batch"), ({"t_min": 0.0}, "t_min"), ({"t_min": 1.0}, "t_min")]:
        with pytest.raises(ValueError, match=match):
            sample_importance_time(VPSDE(), **{"batch": 4, "t_min": 1e-5, **kwargs})


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE()], ids=lambda s: s.name)
def test_training_loss_with_importance_sampling_is_the_likelihood_weighted_loss(sde):
    """The training loop's loss under importance sampling, with the exact eps of Gaussian data (variances v), has the
    expectation of the uniform-time likelihood-weighted DSM loss, int lambda(t) mmse(t) dt / (T - t_min), with
    mmse(t) = mean_d alpha^2 v_d / (alpha^2 v_d + sigma^2) (training.loss.ideal_dsm_value): within 4 s.e. Weighting
    the draws by lambda twice would be off by orders of magnitude."""
    from configs.toy_gmm import get_config
    from data.toy import make_mixture
    from losses.dsm import ideal_dsm_value
    from models.score import ScoreModel
    from training.loop import compute_loss, draw_time_and_noise

    cfg = get_config()
    cfg.training.weighting, cfg.training.importance_sampling, cfg.training.t_min = "likelihood", True, T_MIN
    mix = make_mixture("gaussian", 2)
    model, g = ScoreModel(mix.eps_net(sde), sde).double(), torch.Generator().manual_seed(4)
    x0 = mix.sample(40_000, g, dtype=torch.float64)
    with torch.no_grad():
        draws = draw_time_and_noise(sde, x0, cfg, g)
        loss = compute_loss(model, sde, x0, None, cfg, draws)
    # Closed form: E over x0 and noise of the oracle's eps-MSE at t is the MMSE of the Gaussian in its eigenbasis.
    var = torch.linalg.eigvalsh(mix.covs[0].double())
    ts = torch.logspace(math.log10(T_MIN), 0.0, 400_001, dtype=torch.float64)
    expected = torch.trapezoid(likelihood_weight(sde, ts) * ideal_dsm_value(sde, ts, var), ts).item() / (1 - T_MIN)
    assert abs(loss.mean().item() - expected) < 4 * loss.std().item() / math.sqrt(len(loss)), (loss.mean(), expected)
