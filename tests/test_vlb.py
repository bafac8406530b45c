"""The discrete variational bound against exact answers: DDPM's posterior, per-term expectations, the bound versus
the exact NLL as the number of steps grows, the discretised decoder, grids and errors.

What the bound is compared with. For continuous data and the Gaussian decoder, bound(x0) >= -log p_model(x0) for
every x0, where p_model is the discrete-time model's own marginal, which is NOT the data density; so the right
comparison with the exact NLL -log p_data(x0) is in expectation over the data: E[bound] >= E[-log p_model] >=
E[-log p_data] = H(p_data) (Gibbs). With the exact score the gap E[bound] - H shrinks like 1/K on a grid even in
log-SNR with fixed end points (each step's Riemann-sum error is O(dlogSNR^2)) down to the prior and decoder
mismatch (~1e-5 nats here). Per-example differences bound(x0) - (-log p_data(x0)) are averaged, which cancels the
spread of -log p_data. For 8-bit data and the discretised decoder the same argument gives E[bound] >= H(P) with P
the data's pixel distribution.
"""

from __future__ import annotations

import math

import pytest
import torch

from likelihood import (
    bound_grid,
    check_bound_support,
    discretized_gaussian_log_likelihood,
    vlb_bits_per_dim,
    vlb_terms,
)
from sde import EDMSDE, SDE, VESDE, VPSDE, CosineVPSDE, DiscreteVPSDE, RectifiedFlow, SubVPSDE, append_dims

PATHS = [VPSDE(), SubVPSDE(), VESDE(), DiscreteVPSDE(N=100), CosineVPSDE(N=100), EDMSDE(), RectifiedFlow()]

MEAN, STD = 0.3, 0.5  # 1-D Gaussian data N(MEAN, STD^2)


def gaussian_score(sde, mean=MEAN, std=STD):
    """Exact score of N(mean, std^2 I) data under the SDE: -(x - alpha mean) / (alpha^2 std^2 + sigma^2)."""

    def score_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return -(x - append_dims(alpha, x.ndim) * mean) / append_dims(alpha**2 * std**2 + sigma**2, x.ndim)

    return score_fn


def gaussian_data(n, seed=0):
    x0 = MEAN + STD * torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    nll = 0.5 * ((x0[:, 0] - MEAN) / STD) ** 2 + math.log(STD) + 0.5 * math.log(2 * math.pi)
    return x0, nll


def test_gaussian_score_is_the_oracle():
    """The cheap closed-form score used here equals data.toy.GaussianMixture's exact score."""
    from data.toy import GaussianMixture

    mix = GaussianMixture(torch.ones(1), torch.tensor([[MEAN]]), torch.tensor([STD]))
    x, t = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None], torch.linspace(0.01, 1, 7, dtype=torch.float64)
    for sde in (VPSDE(), SubVPSDE(), VESDE()):
        torch.testing.assert_close(gaussian_score(sde)(x, t), mix.score(x, t, sde))


# ---- The posterior. --------------------------------------------------------------------------------------------------
def test_posterior_is_ddpm_on_its_chain():
    """On DDPM's grid: c_t = sqrt(alpha_t)(1 - abar_{t-1})/(1 - abar_t), c_0 = sqrt(abar_{t-1}) beta_t/(1 - abar_t),
    var_q = beta-tilde_t = (1 - abar_{t-1}) beta_t/(1 - abar_t), v^2 = beta_t (Ho et al. 2020, Eqs. 6-7)."""
    sde = DiscreteVPSDE(N=100)
    betas, abar = sde.betas, sde.alphas_cumprod
    s, t = torch.arange(1, 100, dtype=torch.float64) / 100, torch.arange(2, 101, dtype=torch.float64) / 100
    c_t, c_0, var_q = sde.posterior(s, t)
    v2 = sde.step_variance(s, t, "forward")
    b, a_prev, a_cur = betas[1:], abar[:-1], abar[1:]
    torch.testing.assert_close(c_t, (1 - b).sqrt() * (1 - a_prev) / (1 - a_cur))
    torch.testing.assert_close(c_0, a_prev.sqrt() * b / (1 - a_cur))
    torch.testing.assert_close(var_q, (1 - a_prev) * b / (1 - a_cur))
    torch.testing.assert_close(v2, b)


@pytest.mark.parametrize("sde", [SubVPSDE(), VESDE()], ids=lambda s: s.name)
def test_posterior_matches_simulated_pairs(sde):
    """Regressing simulated x_s on x_t (given x_0 = 0.7) recovers c_t, c_0 x_0 and var_q: coefficients within 4
    s.e. of least squares (computed below), the residual variance within 4 sqrt(2/n) relative."""
    n, x0 = 200_000, 0.7
    g = torch.Generator().manual_seed(0)
    s, t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.45], dtype=torch.float64)
    (alpha_s, sigma_s), (a, v) = sde.marginal(s), sde.transition(s, t)
    x_s = alpha_s * x0 + sigma_s * torch.randn(n, generator=g, dtype=torch.float64)
    x_t = a * x_s + v * torch.randn(n, generator=g, dtype=torch.float64)
    design = torch.stack([x_t, torch.ones_like(x_t)], 1)
    coef = torch.linalg.lstsq(design, x_s[:, None]).solution[:, 0]
    resid_var = (x_s - design @ coef).var()
    se = (resid_var * torch.linalg.inv(design.T @ design).diagonal()).sqrt()
    c_t, c_0, var_q = sde.posterior(s, t)
    assert abs(coef[0] - c_t) < 4 * se[0] and abs(coef[1] - c_0 * x0) < 4 * se[1]
    assert abs(resid_var / var_q - 1) < 4 * math.sqrt(2 / n)


# ---- The bound for the exact Gaussian model. -------------------------------------------------------------------------
def mmse(sde, t):
    """E|x_0 - E[x_0 | x_t]|^2 for 1-D Gaussian data: STD^2 sigma^2 / (alpha^2 STD^2 + sigma^2)."""
    alpha, sigma = sde.marginal(t)
    return STD**2 * sigma**2 / (alpha**2 * STD**2 + sigma**2)


@pytest.mark.parametrize("variance", ["posterior", "forward"])
@pytest.mark.parametrize("sde", PATHS, ids=lambda s: s.name)
def test_terms_match_closed_form_expectations(sde, variance):
    """With the exact Gaussian score, x0_hat = E[x_0 | x_t], so E L_{k-1} = KL of the variances + c_0^2 mmse(t) /
    (2 var_p) and E L_0 = log(tau sqrt(2 pi)) + mmse(t_1)/(2 tau^2) (tau = sigma_1/alpha_1); each Monte-Carlo mean
    over 20000 draws lies within 4.5 standard errors; the prior term is deterministic given x_0 (to 1e-10)."""
    x0, _ = gaussian_data(20_000)
    grid = bound_grid(sde, 5, spacing="uniform" if hasattr(sde, "N") else "logsnr")
    terms = vlb_terms(
        gaussian_score(sde),
        sde,
        x0,
        grid,
        variance=variance,
        decoder="gaussian",
        generator=torch.Generator().manual_seed(1),
    )
    c_t, c_0, var_q = sde.posterior(grid[:-1], grid[1:])
    var_p = sde.step_variance(grid[:-1], grid[1:], variance)
    expected = 0.5 * (var_q / var_p - 1 - torch.log(var_q / var_p)) + c_0**2 * mmse(sde, grid[1:]) / (2 * var_p)
    alpha_1, sigma_1 = sde.marginal(grid[:1])
    tau2 = sigma_1**2 / alpha_1**2
    expected_decoder = 0.5 * torch.log(2 * math.pi * tau2) + mmse(sde, grid[:1]) / (2 * tau2)
    for value, target in [*zip(terms["diffusion"].T, expected), (terms["decoder"], expected_decoder[0])]:
        assert abs(value.mean() - target) < 4.5 * value.std() / math.sqrt(value.numel()), (value.mean(), target)
    alpha_T, sigma_T = sde.marginal(grid[-1:])
    prior_var = sde.prior_std**2
    kl = 0.5 * ((sigma_T**2 + alpha_T**2 * x0[:, 0] ** 2) / prior_var - 1 - torch.log(sigma_T**2 / prior_var))
    torch.testing.assert_close(terms["prior"], kl, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["total"], terms["prior"] + terms["diffusion"].sum(1) + terms["decoder"])


@pytest.mark.parametrize("sde", [VPSDE(), EDMSDE(), RectifiedFlow()], ids=lambda s: s.name)
def test_bound_is_above_the_exact_nll_and_approaches_it(sde):
    """Continuous 1-D Gaussian data, exact score, Gaussian decoder, K = 10, 100, 1000 steps evenly spaced in
    log-SNR from t_1 = 1e-4 to T: the mean gap E[bound] - H stays >= 0 (within 4 s.e.), decreases, and falls
    ~1/K (measured on VP: 13.5, 0.52, 0.040 nats; rectified flow, whose lambda spans 16 instead of 11: 65, 1.41,
    0.12; asserted gap_1000 < gap_100 / 5 and < 0.2 nats)."""
    x0, nll = gaussian_data(10_000)
    gaps = []
    for k in (10, 100, 1000):
        grid = bound_grid(sde, k, t_min=1e-4, spacing="logsnr")
        terms = vlb_terms(
            gaussian_score(sde), sde, x0, grid, decoder="gaussian", generator=torch.Generator().manual_seed(k)
        )
        gap = terms["total"] - nll
        stderr = gap.std().item() / math.sqrt(gap.numel())
        assert gap.mean() > -4 * stderr, (k, gap.mean(), stderr)
        gaps.append(gap.mean().item())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < gaps[1] / 5 and gaps[2] < 0.2, gaps


def test_ddpm_chain_bound_with_discretized_decoder_is_above_the_pixel_entropy():
    """8-bit data: pixels drawn from the discretised N(MEAN, STD^2) (bins of width 2/256), exact score of the
    continuous Gaussian, DDPM's chain (N = 1000) with strided subsets of 10, 100 and all 1000 steps: the mean bound
    in bits/dim stays above the exact pixel entropy H(P) (within 4 s.e.) and decreases with K."""
    sde = DiscreteVPSDE(N=1000)
    edges = torch.cat(
        [torch.tensor([-math.inf]), 2 * torch.arange(1, 256, dtype=torch.float64) / 256 - 1, torch.tensor([math.inf])]
    )
    probs = torch.distributions.Normal(torch.tensor(MEAN, dtype=torch.float64), STD).cdf(edges).diff()
    entropy_bits = -(probs * torch.log2(probs.clamp_min(1e-300))).sum().item()
    k = torch.multinomial(probs, 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    x0 = ((2 * k + 1) / 256 - 1).double()[:, None]  # pixel-bin centres, as dequantize_and_scale(dequantize=False)
    means = []
    for steps in (10, 100, 1000):
        terms = vlb_terms(
            gaussian_score(sde), sde, x0, bound_grid(sde, steps), generator=torch.Generator().manual_seed(steps)
        )
        bpd = vlb_bits_per_dim(terms, 1)["total"]
        means.append(bpd.mean().item())
        assert bpd.mean() > entropy_bits - 4 * bpd.std() / math.sqrt(bpd.numel()), (steps, bpd.mean(), entropy_bits)
    assert means[0] > means[1] > means[2], means


# ---- The discretised decoder. ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mean, std", [(0.0, 0.3), (0.98, 0.01), (-3.0, 0.5), (0.1, 1e-4), (5.0, 2.0)])
def test_discretized_decoder_is_a_distribution_over_the_256_bins(mean, std):
    """P(bin k) over all 256 bin centres sums to 1 (outer edges at -+inf) and equals the Normal CDF difference."""
    x0 = ((2 * torch.arange(256, dtype=torch.float64) + 1) / 256 - 1)[:, None]
    logp = discretized_gaussian_log_likelihood(
        x0, torch.full_like(x0, mean), torch.full((256,), std, dtype=torch.float64)
    )
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), std)
    k = 100
    direct = normal.cdf(torch.tensor(2 * (k + 1) / 256 - 1)) - normal.cdf(torch.tensor(2 * k / 256 - 1))
    assert logp[k].exp().item() == pytest.approx(direct.item(), rel=1e-6, abs=1e-300)


@pytest.mark.parametrize("x0", [torch.tensor([[1.2]]), torch.tensor([[0.0]]), torch.tensor([[-1.0]])])
def test_discretized_decoder_rejects_data_off_the_pixel_centres(x0):
    with pytest.raises(ValueError, match="pixel-bin centres"):
        discretized_gaussian_log_likelihood(x0, torch.zeros(1, 1), torch.ones(1))


def test_all_sdes_give_a_finite_bound_on_images():
    """Every path on (1, 4, 4) pixel centres: finite terms of the right shapes, and bits/dim = nats / (D ln 2) term
    by term."""
    pixels = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    x0 = (2 * pixels + 1) / 256 - 1
    for sde in PATHS:
        terms = vlb_terms(
            gaussian_score(sde, 0.0, 0.5), sde, x0, bound_grid(sde, 20), generator=torch.Generator().manual_seed(1)
        )
        assert terms["diffusion"].shape == (3, 19) and all(torch.isfinite(v).all() for v in terms.values())
        bpd = vlb_bits_per_dim(terms, 16)
        torch.testing.assert_close(bpd["total"], terms["total"] / (16 * math.log(2)))


# ---- Grids and errors. -----------------------------------------------------------------------------------------------
def test_bound_grids():
    """Uniform k/K; DDPM's chain: all i/N for K = N and a strided subset keeping 1/N and 1; log-SNR evenly spaced."""
    torch.testing.assert_close(bound_grid(VPSDE(), 4), torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    chain = DiscreteVPSDE(N=100)
    torch.testing.assert_close(bound_grid(chain, 100), torch.arange(1, 101, dtype=torch.float64) / 100)
    strided = bound_grid(chain, 10)
    assert len(strided) == 10 and strided[0] == 0.01 and strided[-1] == 1.0
    assert torch.allclose(strided * 100, torch.round(strided * 100))
    sde = SubVPSDE()
    grid = bound_grid(sde, 7, t_min=1e-3, spacing="logsnr")
    steps = sde.snr(grid).log().diff()
    torch.testing.assert_close(steps, steps.mean().expand(6))
    assert grid[0] == 1e-3 and grid[-1] == 1.0


class NoMarginalSDE(SDE):
    """An object that defines dynamics but no closed-form marginals."""

    def sde(self, x, t):
        return -x, torch.ones_like(t)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: vlb_terms(None, VPSDE(), torch.zeros(1, 1), bound_grid(VPSDE(), 3), variance="learned"), "variance"),
        (lambda: vlb_terms(None, VPSDE(), torch.zeros(1, 1), bound_grid(VPSDE(), 3), decoder="logistic"), "decoder"),
        (lambda: check_bound_support(VPSDE(), torch.tensor([0.5, 0.2, 1.0])), "increasing grid"),
        (lambda: check_bound_support(VPSDE(), torch.tensor([0.5, 1.5])), "increasing grid"),
        (lambda: check_bound_support(VPSDE(), torch.tensor([0.0, 1.0])), "sigma_t > 0"),
        (lambda: check_bound_support(NoMarginalSDE(), torch.tensor([0.5, 1.0])), "needs the path's marginal"),
        (lambda: bound_grid(VPSDE(), 0), "num_steps"),
        (lambda: bound_grid(DiscreteVPSDE(N=100), 101), "exceeds"),
        (lambda: bound_grid(VPSDE(), 10, spacing="cosine"), "spacing"),
        (lambda: vlb_terms(None, VPSDE(), torch.full((1, 2), float("nan")), bound_grid(VPSDE(), 3)), "non-finite"),
    ],
)
def test_bad_bound_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_driver_rejects_an_sde_without_a_bound_before_any_work():
    """evaluate_bpd checks bound support (and every option) before evaluating the score even once."""
    from evaluation.likelihood_eval import evaluate_bpd

    def score_fn(x, t):
        raise AssertionError("no work may start")

    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="needs the path's marginal, which NoMarginalSDE"):
        evaluate_bpd(score_fn, NoMarginalSDE(), images)
    with pytest.raises(ValueError, match="pixels"):
        evaluate_bpd(score_fn, VPSDE(), torch.full((2, 1, 2, 2), 300))
    with pytest.raises(ValueError, match="num_dequant"):
        evaluate_bpd(score_fn, VPSDE(), images, num_dequant=0)
    with pytest.raises(ValueError, match="unknown options"):
        evaluate_bpd(score_fn, VPSDE(), images, num_probe=2)
