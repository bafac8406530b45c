"""Any Gaussian path works everywhere: a path defined in this file (registered nowhere) gets every sampler, the
ODE likelihood and the discrete bound, checked against exact answers; the shipped paths' closed forms (iDDPM's
cosine betas, EDM's probability-flow ODE, the flow-matching velocity, EDM's preconditioning) against
independent formulas; a path that lacks what a sampler needs is refused by name before any score evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from data.toy import make_mixture
from likelihood import bound_grid, log_likelihood, vlb_terms
from models.score import ScoreModel
from samplers import SAMPLERS, count_nfe, run_sampler
from sde import EDMSDE, SDE, SDES, VPSDE, CosineVPSDE, RectifiedFlow, make_sde
from tests.test_samplers import MIXTURE, N_ALD, N, assert_matches


class SinePath(SDE):
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2) on [0, 0.995]: a variance-preserving path that this test
    defines and nothing registers. Drift, diffusion, prior, lambda and its inverse all come from the base class."""

    T = 0.995

    def marginal(self, t):
        return torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)


SINE_CASES = [
    ("ancestral", {"steps": 200}),
    ("ald", {"steps": 100, "n_steps": 8, "grid": "logsnr"}),
    ("pc", {"steps": 200}),
    ("ode", {"steps": 1}),
    ("ddim", {"steps": 100, "grid": "quadratic"}),
    ("dpm_solver", {"steps": 30, "order": 3, "grid": "logsnr"}),
    ("dpm_solver", {"steps": 40, "order": 2, "eta": 1.0, "grid": "logsnr"}),
]


def test_a_new_path_needs_only_its_marginals():
    """The derived f and g^2 are the closed forms of this path: f = -pi/2 tan(pi t/2), g^2 = pi tan(pi t/2)."""
    sde, t = SinePath(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    f, g2 = sde.coefficients(t)
    torch.testing.assert_close(f, -math.pi / 2 * torch.tan(math.pi * t / 2))
    torch.testing.assert_close(g2, math.pi * torch.tan(math.pi * t / 2))
    torch.testing.assert_close(sde.t_from_logsnr(sde.logsnr(t)), t)
    assert sde.prior_std == pytest.approx(math.sin(math.pi * 0.995 / 2))


@pytest.mark.parametrize("case", SINE_CASES, ids=lambda c: c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[1].items()))
def test_every_sampler_samples_a_path_defined_here(case):
    sampler, options = case
    sde, n = SinePath(), (N_ALD if sampler == "ald" else N)
    if sampler == "ald":
        alpha, sigma = sde.marginal(torch.tensor([1e-3], dtype=torch.float64))
        options = {**options, "eps": float(sigma / alpha) ** 2}
    g = torch.Generator().manual_seed(0)
    x = run_sampler(sampler, MIXTURE.score_fn(sde), sde, sde.prior_sampling((n, 2), g), generator=g, **options)
    assert_matches(MIXTURE, x)


def test_ode_likelihood_of_a_path_defined_here_matches_the_exact_density():
    """Exact divergence: log p_{t_min}(x) within 1e-3 bits/dim of the closed form (with the exact p_T)."""
    sde, mix = SinePath(), make_mixture("gaussian", 3, seed=1)
    x = mix.sample(3, torch.Generator().manual_seed(0), dtype=torch.float64)
    logp, z, nfe = log_likelihood(mix.score_fn(sde), sde, x, divergence="exact")
    solver_logp = logp - sde.prior_logp(z) + mix.log_prob(z, sde.T, sde)
    err_bpd = (solver_logp - mix.log_prob(x, 1e-5, sde)).abs() / (3 * math.log(2))
    assert err_bpd.max() < 1e-3, (err_bpd, nfe)


def test_bound_of_a_path_defined_here_is_above_the_exact_nll_and_approaches_it():
    """1-D Gaussian data, exact score, Gaussian decoder: E[bound] - H >= 0 within 4 s.e. and falls with K."""
    sde, mix = SinePath(), make_mixture("gaussian", 1, seed=2)
    x0 = mix.sample(10_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    nll = -mix.log_prob(x0, 0.0, VPSDE())  # VP at t = 0 is the data density itself
    gaps = []
    for k in (10, 100, 1000):
        terms = vlb_terms(
            mix.score_fn(sde),
            sde,
            x0,
            bound_grid(sde, k, t_min=1e-4, spacing="logsnr"),
            decoder="gaussian",
            generator=torch.Generator().manual_seed(k),
        )
        gap = terms["total"] - nll
        assert gap.mean() > -4 * gap.std() / math.sqrt(gap.numel()), (k, gap.mean())
        gaps.append(gap.mean().item())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.2, gaps


# ---- What a sampler needs, named before any score evaluation. --------------------------------------------------------
def never_called(x, t):
    raise AssertionError("the score was evaluated before the path was checked")


class NoMarginal(SDE):
    """Dynamics without marginals: not a Gaussian path."""

    def sde(self, x, t):
        return -x, torch.ones_like(t)


class NoPrior(SinePath):
    @property
    def prior_std(self):
        raise NotImplementedError


class EndsAtZeroSignal(SDE):
    """The linear interpolant run up to t = 1, where alpha_1 = 0: no data prediction there."""

    def marginal(self, t):
        return 1 - t, t


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_a_path_that_lacks_what_a_sampler_needs_is_refused_by_name(sampler):
    options = {"eps": 1e-6} if sampler == "ald" else {}
    with pytest.raises(ValueError, match=f"sampler '{sampler}' needs the path's marginal, which NoMarginal"):
        run_sampler(sampler, never_called, NoMarginal(), torch.zeros(4, 2), steps=5, **options)
    with pytest.raises(ValueError, match="needs alpha_t > 0"):
        run_sampler(sampler, never_called, EndsAtZeroSignal(), torch.zeros(4, 2), steps=5, **options)


def test_the_likelihood_and_the_bound_name_what_a_path_lacks():
    with pytest.raises(ValueError, match="the ODE likelihood needs the path's prior_std, which NoPrior does not"):
        log_likelihood(never_called, NoPrior(), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="the discrete variational bound needs the path's marginal, which NoMarginal"):
        vlb_terms(never_called, NoMarginal(), torch.zeros(2, 2), torch.tensor([0.5, 1.0]))


# ---- The shipped paths against independent formulas. ----------------------------------------------------------------
def test_cosine_chain_is_iddpm_with_clipped_betas():
    """Nichol & Dhariwal 2021, Eq. 17 and Sec. 3.2, written out with math.cos: betas, alpha-bar, and the path's
    marginal at t = i/N equal to sqrt(alpha-bar_i)."""
    n, s = 1000, 0.008

    def f(t):
        return math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f(i) / f(i - 1), 0.999) for i in range(1, n + 1)], dtype=torch.float64)
    sde = CosineVPSDE(N=n)
    torch.testing.assert_close(sde.betas, betas, rtol=1e-12, atol=1e-15)
    assert sde.betas.max() == 0.999 and (sde.betas > 0).all()
    abar = torch.cumprod(1 - betas, 0)
    i = torch.tensor([1, 10, 500, 999, 1000])
    alpha, sigma = sde.marginal(i.double() / n)
    torch.testing.assert_close(alpha, abar[i - 1].sqrt(), rtol=1e-10, atol=0)
    torch.testing.assert_close(sigma, (1 - abar[i - 1]).sqrt(), rtol=1e-10, atol=0)


def test_edm_probability_flow_is_karras_eq_3():
    """sigma(t) = t: dx/dt = -t score = (x - D(x; t)) / t with Tweedie's D (Karras et al. 2022, Eq. 3)."""
    sde, mix = EDMSDE(), make_mixture("gmm2d")
    x = 3 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.01, 0.3, 2.0, 17.0, 80.0], dtype=torch.float64)
    score = mix.score(x, t, sde)
    drift = sde.reverse(x, t, score, probability_flow=True)[0]
    torch.testing.assert_close(drift, (x - sde.denoise(x, t, score)) / t[:, None])


def test_rectified_flow_probability_flow_is_the_flow_matching_velocity():
    """For one data point c, x_t = (1 - t) c + t noise: the probability-flow drift is noise - c (Liu et al. 2023)."""
    sde, c = RectifiedFlow(), torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    noise = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.8, 0.95, 0.999], dtype=torch.float64)
    x = sde.perturb(c.expand(6, 2), t, noise)
    score = -(x - (1 - t)[:, None] * c) / (t**2)[:, None]  # point-mass data
    drift = sde.reverse(x, t, score, probability_flow=True)[0]
    torch.testing.assert_close(drift, noise - c, rtol=1e-9, atol=1e-9)


class _ExactEDMNet(torch.nn.Module):
    """F with D = c_skip y + c_out F equal to the exact denoiser, read from EDM's (c_in y, c_noise) alone."""

    def __init__(self, sde, mix, sigma_data):
        super().__init__()
        self.sde, self.mix, self.sd, self.seen = sde, mix, sigma_data, []

    def forward(self, x_in, c_noise):
        self.seen.append((x_in, c_noise))
        s = torch.exp(4 * c_noise)  # c_noise = log(s) / 4
        y = x_in * torch.sqrt(s**2 + self.sd**2)[:, None]  # c_in = 1 / sqrt(s^2 + sd^2)
        t = self.sde.t_from_logsnr(-torch.log(s))
        alpha = self.sde.marginal(t)[0][:, None]
        d = self.sde.denoise(alpha * y, t, self.mix.score(alpha * y, t, self.sde))
        c_skip = (self.sd**2 / (s**2 + self.sd**2))[:, None]
        c_out = (s * self.sd / torch.sqrt(s**2 + self.sd**2))[:, None]
        return (d - c_skip * y) / c_out


@pytest.mark.parametrize("sde", [EDMSDE(), VPSDE(), RectifiedFlow()], ids=lambda s: s.name)
def test_edm_preconditioning_in_the_score_wrapper(sde):
    """model.parameterization = 'edm': the network sees EDM's c_in y and c_noise = log(s)/4 (s = sigma/alpha);
    a network whose D is the exact denoiser makes the wrapper's score the exact score, on any path."""
    mix, sd = make_mixture("gmm2d"), 0.5
    net = _ExactEDMNet(sde, mix, sd)
    model = ScoreModel(net, sde, parameterization="edm", sigma_data=sd)
    t = torch.tensor([0.02, 0.3, 0.7], dtype=torch.float64) * sde.T
    x = sde.perturb(
        mix.sample(3, torch.Generator().manual_seed(0), dtype=torch.float64),
        t,
        torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
    )
    torch.testing.assert_close(model(x, t), mix.score(x, t, sde), rtol=1e-7, atol=1e-7)
    alpha, sigma = sde.marginal(t)
    s = sigma / alpha
    x_in, c_noise = net.seen[-1]
    torch.testing.assert_close(c_noise, torch.log(s) / 4)
    torch.testing.assert_close(x_in, x / (alpha * torch.sqrt(s**2 + sd**2))[:, None])


def test_every_registered_path_passes_the_sampler_oracle_suite():
    """The registry and the oracle tests' list of paths are the same (tests/test_samplers.py runs every sampler on
    each), so a path added to sde.SDES cannot skip them."""
    from tests.test_samplers import SDE_NAMES

    assert sorted(SDE_NAMES) == sorted(SDES)
    for name in SDES:
        sde = make_sde(name)
        x = run_sampler("dpm_solver", count_nfe(MIXTURE.score_fn(sde)), sde, sde.prior_sampling((8, 2)), steps=3)
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("sde", [RectifiedFlow(), VPSDE(), EDMSDE()], ids=lambda s: s.name)
def test_flow_matching_weighting_is_the_velocity_regression(sde):
    """weighting='flow_matching' is |v_hat - u|^2 with u = alpha' x_0 + sigma' noise (Lipman et al. 2023, Eq. 23)
    and v_hat the same with the model's x0_hat and eps_hat; alpha', sigma' by central differences here."""
    from losses.dsm import dsm_loss

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Linear(3, 3).double()
    model = ScoreModel(lambda x, label: net(x) + label[:, None], sde)
    x0, noise = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64) * sde.T
    loss = dsm_loss(model, sde, x0, t, noise, weighting="flow_matching")
    h = 1e-6 * sde.T
    (a_hi, s_hi), (a_lo, s_lo) = sde.marginal(t + h), sde.marginal(t - h)
    da, ds = ((a_hi - a_lo) / (2 * h))[:, None], ((s_hi - s_lo) / (2 * h))[:, None]
    x_t = sde.perturb(x0, t, noise)
    eps_hat = model.eps(x_t, t)
    alpha, sigma = (v[:, None] for v in sde.marginal(t))
    x0_hat = (x_t - sigma * eps_hat) / alpha
    velocity_error = (da * x0_hat + ds * eps_hat) - (da * x0 + ds * noise)
    torch.testing.assert_close(loss, velocity_error.pow(2).mean(1), rtol=1e-6, atol=1e-9)
