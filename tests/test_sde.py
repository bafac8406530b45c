"""SDEs against exact answers: marginals vs a simulated forward SDE, DDPM's chain, NCSN's ladder, prior, reverse."""

import math

import pytest
import torch

from sde import (
    EDMSDE,
    SDES,
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiscreteVPSDE,
    RectifiedFlow,
    SubVPSDE,
    append_dims,
    ddpm_betas,
    make_sde,
    sde_from_config,
)

ALL = [VPSDE(), SubVPSDE(), VESDE(), DiscreteVPSDE(N=100), CosineVPSDE(N=100), EDMSDE(), RectifiedFlow()]


@pytest.mark.parametrize("sde", ALL, ids=lambda s: s.name)
def test_marginal_matches_simulated_forward_sde(sde):
    """Euler-Maruyama simulation of dx = f dt + g dw from x_0 matches N(alpha_t x_0, sigma_t^2) at t = 0.3 T, 0.9 T
    (and at T where Euler is stable there: the drift of rectified flow, -1/(1 - t), and of the cosine chain's last
    step, beta = -N log(1 - 0.999), make it stiff)."""
    g = torch.Generator().manual_seed(0)
    n, steps, x0 = 10000, 500, 1.5
    _, sigma0 = sde.marginal(torch.zeros(1, dtype=torch.float64))
    x = x0 + sigma0 * torch.randn(n, 1, generator=g, dtype=torch.float64)  # VE starts with sigma_min noise
    dt = sde.T / steps
    f_end = sde.coefficients(torch.tensor([sde.T], dtype=torch.float64))[0].abs().item()
    checks = (150, 450) if f_end * dt > 0.05 else (150, 450, steps)
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=torch.float64)
        f, gt = sde.sde(x, t)
        x = x + f * dt + append_dims(gt, 2) * math.sqrt(dt) * torch.randn(x.shape, generator=g, dtype=x.dtype)
        if i + 1 in checks:
            alpha, sigma = sde.marginal(torch.tensor([(i + 1) * dt], dtype=torch.float64))
            mean, std = (alpha * x0).item(), sigma.item()
            # Mean within 4 standard errors; variance within 4 s.e. (var of sample var = 2 s^4 / n) + O(dt) bias.
            assert abs(x.mean().item() - mean) < 4 * std / math.sqrt(n) + 5e-3 * (1 + abs(mean))
            assert abs(x.var().item() / std**2 - 1) < 4 * math.sqrt(2 / n) + 2e-2  # + O(dt) Euler bias


def test_vp_discretisation_is_ddpm():
    """N = 1000: betas 1e-4..0.02, alpha-bar = cumprod(1 - beta), forward step N(sqrt(1 - beta) x, beta I)."""
    sde = DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # Ho et al. 2020, Sec. 4
    torch.testing.assert_close(sde.betas, betas, rtol=0, atol=1e-15)
    torch.testing.assert_close(ddpm_betas(1000), betas, rtol=0, atol=1e-15)
    abar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(sde.alphas_cumprod, abar, rtol=1e-12, atol=0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    alpha, sigma = sde.marginal(t)  # q(x_i | x_0) = N(sqrt(abar_i) x_0, (1 - abar_i) I)
    torch.testing.assert_close(alpha, abar.sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma, (1 - abar).sqrt(), rtol=1e-10, atol=0)
    x = torch.randn(1000, 3, dtype=torch.float64)
    f, G = sde.discretize(x, t - 1e-3, t)  # x_i = x_{i-1} + f + G noise
    torch.testing.assert_close(x + f, (1 - betas).sqrt()[:, None] * x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(G, betas.sqrt(), rtol=1e-9, atol=0)


def test_continuous_vp_approaches_ddpm():
    """The continuous VP marginal at t = i/N is DDPM's alpha-bar_i up to O(1/N)."""
    sde, ddpm = VPSDE(), DiscreteVPSDE(N=1000)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert (sde.marginal(t)[0] - ddpm.marginal(t)[0]).abs().max() < 5e-3


def test_ve_discretisation_is_smld_ladder():
    """VE's transition between ladder times is SMLD's N(x, (sigma_i^2 - sigma_{i-1}^2) I)."""
    sde = VESDE(0.01, 50.0)
    ladder = sde.noise_ladder(10)
    torch.testing.assert_close(ladder, torch.logspace(math.log10(50), math.log10(0.01), 10, dtype=torch.float64))
    t = torch.linspace(0, 1, 10, dtype=torch.float64)
    x = torch.randn(9, 4, dtype=torch.float64)
    f, G = sde.discretize(x, t[:-1], t[1:])
    sig = ladder.flip(0)
    torch.testing.assert_close(f, torch.zeros_like(x))
    torch.testing.assert_close(G, (sig[1:] ** 2 - sig[:-1] ** 2).sqrt())


@pytest.mark.parametrize("sde", ALL, ids=lambda s: s.name)
def test_transition_composes(sde):
    """Exact kernels compose: p(x_u|x_s) = p(x_u|x_t) * p(x_t|x_s), and p(x_t|x_0) = marginal."""
    s, t, u = (torch.tensor([v], dtype=torch.float64) for v in (0.1, 0.4, 0.9))
    a1, v1 = sde.transition(s, t)
    a2, v2 = sde.transition(t, u)
    a, v = sde.transition(s, u)
    torch.testing.assert_close(a, a1 * a2)
    torch.testing.assert_close(v**2, a2**2 * v1**2 + v2**2)


@pytest.mark.parametrize("sde", ALL, ids=lambda s: s.name)
def test_reverse_drift_and_probability_flow(sde):
    """Reverse drift is f - g^2 s; the probability-flow drift is f - g^2 s / 2 with zero diffusion."""
    x = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    score = torch.randn_like(x)
    f, g = sde.sde(x, t)
    drift, diffusion = sde.reverse(x, t, score)
    torch.testing.assert_close(drift, f - g[:, None, None, None] ** 2 * score)
    torch.testing.assert_close(diffusion, g)
    drift, diffusion = sde.reverse(x, t, score, probability_flow=True)
    torch.testing.assert_close(drift, f - 0.5 * g[:, None, None, None] ** 2 * score)
    assert (diffusion == 0).all()


@pytest.mark.parametrize("sde", ALL, ids=lambda s: s.name)
def test_prior(sde):
    """prior_logp is the log-density of prior_sampling's N(0, prior_std^2 I); p_T is close to the prior."""
    g = torch.Generator().manual_seed(1)
    z = sde.prior_sampling((50000, 3), generator=g, dtype=torch.float64)
    assert abs(z.std().item() / sde.prior_std - 1) < 0.01
    expected = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expected)
    alpha, sigma = sde.marginal(torch.tensor([sde.T], dtype=torch.float64))
    assert alpha.item() / sigma.item() < 0.03  # p_T is nearly N(0, sigma_T^2 I) for data of unit scale
    assert abs(sigma.item() - sde.prior_std) / sde.prior_std < 1e-3


def test_make_sde_and_config_round_trip():
    for name in SDES:
        sde = make_sde(name)
        again = sde_from_config(sde.config())
        t = torch.linspace(0.01, 0.99, 7) * sde.T
        torch.testing.assert_close(again.marginal(t), sde.marginal(t))
        assert again.config() == sde.config()


def test_make_sde_refuses_an_argument_the_path_does_not_take():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['beta_mxa'\] for the 'vp' SDE; valid: \['beta_min'"):
        make_sde("vp", beta_mxa=1.0)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("vp", {"beta_min": 20.0, "beta_max": 0.1}, "beta_min < beta_max"),
        ("subvp", {"beta_min": -1.0, "beta_max": 20.0}, "beta_min"),
        ("ve", {"sigma_min": 50.0, "sigma_max": 0.01}, "sigma_min < sigma_max"),
        ("ddpm", {"N": 0}, "N must be"),
        ("ddpm", {"N": 10, "beta_max": 20.0}, "must be < 1"),
        ("bogus", {}, "valid names"),
    ],
)
def test_bad_parameters_are_refused(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sde(name, **kwargs)
