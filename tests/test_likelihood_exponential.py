"""The exponential multistep likelihood integrator (likelihood/exponential.py) against exact answers.

Oracles: data.toy.GaussianMixture's exact score and log-density on every path; polynomials that the order-k step
and the quadrature must integrate exactly (that is what "order k" means for a multistep rule, checked here with
the variable-step weights actually used); a counting score_fn for what is evaluated where.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_likelihood import TARGETS

import likelihood.exponential as exponential
from data.toy import make_mixture
from likelihood import check_ode_options, log_likelihood, log_likelihood_per_probe
from likelihood.exponential import MAX_STEP_LOGSNR, QUADRATURE_POINTS, _quadrature, _Variable, step_factor
from sde import EDMSDE, VESDE, VPSDE, CosineVPSDE, DiscreteVPSDE, RectifiedFlow, SubVPSDE


def reference_integral(f, lam_a: float, lam_b: float) -> float:
    """int_{lam_a}^{lam_b} f(lambda) dlambda by 200-point Gauss-Legendre (converged to rounding for the smooth
    integrands here; scipy's quad loses digits to t(lambda)'s bisection)."""
    u, w = np.polynomial.legendre.leggauss(200)
    lam = (lam_a + lam_b) / 2 + (lam_b - lam_a) / 2 * u
    return float((lam_b - lam_a) / 2 * np.sum(w * np.array([f(v) for v in lam])))


PATHS = [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE(), EDMSDE(), RectifiedFlow(), DiscreteVPSDE(N=40)]


def _solver_error(mix, sde, n, tol):
    """(log p, |error| in bits/dim per example, calls): the exponential integrator with the exact divergence on n
    float64 samples of mix at rtol = atol = tol, the prior swapped for the exact log p_T(z) (the solver's error)."""
    x = mix.sample(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    logp, z, calls = log_likelihood(
        mix.score_fn(sde), sde, x, method="exponential", divergence="exact", rtol=tol, atol=tol
    )
    solver_logp = logp - sde.prior_logp(z) + mix.log_prob(z, sde.T, sde)
    return logp, (solver_logp - mix.log_prob(x, 1e-5, sde)).abs() / (mix.dim * math.log(2)), calls


@pytest.mark.parametrize("sde", PATHS, ids=lambda s: s.name)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_matches_exact_log_density_on_every_path(sde, target):
    """Exact divergence, float64, rtol = atol = 1e-7: log p_{t_min}(x) within 1e-5 bits/dim of the closed form
    (the prior replaced by the exact log p_T(z), as in test_likelihood)."""
    logp, err_bpd, calls = _solver_error(TARGETS[target](), sde, 3, 1e-7)
    assert err_bpd.max() < 1e-5, (err_bpd, calls)
    assert logp.dtype == torch.float64 and 5 < calls < 1000


@pytest.mark.parametrize("sde", PATHS, ids=lambda s: s.name)
def test_error_stays_near_the_tolerance_on_every_path(sde):
    """At rtol = atol = 1e-5 on a 32-D correlated Gaussian (eigenvalues over two decades) the error stays within
    10x the tolerance in bits/dim on every path (measured 9e-6 - 6e-5). Without the longest step in lambda
    (MAX_STEP_LOGSNR) it missed 50x on sub-VP and EDM's path (5e-4, 6e-4): steps of 3-6 in lambda at the data end,
    where the accumulator's integrand sigma^2 div score decays like e^{-2 lambda}, passed the step control."""
    _, err_bpd, calls = _solver_error(make_mixture("gaussian", 32, seed=0), sde, 8, 1e-5)
    assert err_bpd.max() < 1e-4, (err_bpd, calls)


@pytest.mark.parametrize("variable", ["t", "logsnr"])
def test_no_step_is_longer_than_the_cap_in_logsnr(variable):
    """Consecutive calls are at most MAX_STEP_LOGSNR apart in lambda, in lambda and in t (a counting score_fn on
    sub-VP, whose data end spans lambda 13.8 -> 7 with almost nothing happening)."""
    sde, mix = SubVPSDE(), make_mixture("gaussian", 4, seed=2)
    x = mix.sample(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    score = mix.score_fn(sde)

    def counting(xx, tt):
        seen.append(float(tt[0]))
        return score(xx, tt)

    log_likelihood(
        counting, sde, x, method="exponential", divergence="exact", rtol=1e-3, atol=1e-3, time_variable=variable
    )
    lam = sde.logsnr(torch.tensor(seen, dtype=torch.float64))
    steps = (lam[1:] - lam[:-1]).abs()
    assert steps.max() <= MAX_STEP_LOGSNR + 1e-9, steps.max()
    assert (steps > MAX_STEP_LOGSNR - 1e-9).sum() >= 5  # the cap is reached, again and again


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: s.name)
def test_error_falls_with_the_tolerance(sde):
    """The step controller works: on an 8-D correlated Gaussian the error at rtol = atol = 1e-8 is at least 100x
    below the error at 1e-3, and it costs more calls."""
    mix = make_mixture("gaussian", 8, seed=3)
    x = mix.sample(4, torch.Generator().manual_seed(1), dtype=torch.float64)
    errs, calls = [], []
    for tol in (1e-3, 1e-8):
        logp, z, n = log_likelihood(
            mix.score_fn(sde), sde, x, method="exponential", divergence="exact", rtol=tol, atol=tol
        )
        errs.append((logp - sde.prior_logp(z) + mix.log_prob(z, sde.T, sde) - mix.log_prob(x, 1e-5, sde)).abs().max())
        calls.append(n)
    assert errs[1] < errs[0] / 100 and calls[1] > calls[0], (errs, calls)


def test_step_factor_is_gustafssons_pi_controller():
    """The next step over this one: 0.9 err^(-1/(k+1)) (the I controller) for the first step and after a rejection,
    Gustafsson's 0.9 err_n^(-0.7/(k+1)) err_{n-1}^(0.4/(k+1)) otherwise; no growth right after a rejection; in
    [0.2, 5]."""
    assert step_factor(0.5, None, 4, False) == pytest.approx(0.9 * 0.5**-0.2)
    assert step_factor(0.5, 0.1, 4, False) == pytest.approx(0.9 * 0.5 ** (-0.7 / 5) * 0.1 ** (0.4 / 5))
    assert step_factor(2.0, 0.1, 4, False) == pytest.approx(0.9 * 2.0**-0.2)  # rejected: the I controller
    assert step_factor(0.01, 0.5, 4, after_rejection=True) == 1.0  # accepted after a rejection: no growth
    assert step_factor(1e-12, None, 4, False) == 5.0 and step_factor(1e6, 1e-3, 4, False) == 0.2


def test_pi_controller_rejects_fewer_steps(monkeypatch):
    """What the PI controller is for: step sizes that do not oscillate. Summed over the 7 paths at rtol = atol = 1e-3
    and 1e-5 (8 draws of a 32-D correlated Gaussian, one Rademacher probe), it rejects at most half as many steps
    as the I controller it replaced (PI_GAINS = (1, 0); measured 28 against 85 rejections)."""
    mix = make_mixture("gaussian", 32, seed=0)
    x = mix.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []

    def spy(err, err_prev, k, after_rejection):
        errs.append(err)
        return step_factor(err, err_prev, k, after_rejection)

    monkeypatch.setattr(exponential, "step_factor", spy)
    rejected, pi = {}, exponential.PI_GAINS
    for gains in (pi, (1.0, 0.0)):
        monkeypatch.setattr(exponential, "PI_GAINS", gains)
        errs.clear()
        for sde in PATHS:
            for tol in (1e-3, 1e-5):
                log_likelihood(mix.score_fn(sde), sde, x, method="exponential", rtol=tol, atol=tol)
        rejected[gains] = sum(e > 1.0 for e in errs)
    assert 2 * rejected[pi] <= rejected[(1.0, 0.0)], rejected


@pytest.mark.parametrize("variable", ["t", "logsnr"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_order_k_weights_are_exact_for_degree_k_minus_1(order, variable):
    """What "order k" means for the multistep rule: with the interpolated quantity (eps in lambda, the score in t,
    whose weight carries the factor sigma) a polynomial of degree k - 1 in tau, the step's
    weights through k uneven past nodes (Adams-Bashforth: extrapolation) and through the new node and k - 1 past
    ones (Adams-Moulton: the corrector) give int e^{-lambda} eps(tau(lambda)) dlambda to rounding. Checked for the
    weights the integrator uses, against adaptive quadrature, on the VP path in t and in lambda."""
    sde = VPSDE()
    var = _Variable(sde, variable, 1e-3)
    rng = np.random.default_rng(order)
    coef = rng.standard_normal(order)
    span = var.end - var.start

    def poly(tau):
        u = (tau - var.start) / span
        return sum(c * u**j for j, c in enumerate(coef))

    to_tau = (lambda lam: lam) if variable == "logsnr" else (lambda lam: float(sde.t_from_logsnr(torch.tensor(lam))))
    in_t = variable == "t"

    def weight(lam):  # e^{-lambda}, times sigma(lambda) for the score in t
        sigma = sde.marginal(sde.t_from_logsnr(torch.tensor([lam], dtype=torch.float64)))[1].item()
        return math.exp(-lam) * (sigma if in_t else 1.0)

    for a_frac, h_frac in [(0.3, 0.05), (0.6, 0.11)]:
        a, b = var.start + a_frac * span, var.start + (a_frac + h_frac) * span
        past = [a - span * s for s in np.cumsum(rng.uniform(0.01, 0.04, order - 1))][::-1]  # uneven, before a
        lam_a, lam_b = var.point(a)[0], var.point(b)[0]
        want = reference_integral(lambda lam: weight(lam) * poly(to_tau(lam)), lam_a, lam_b)
        for nodes in ([*past, a], [*past[1:], a, b]):  # predictor, corrector
            w = var.weights(nodes, a, b, lam_a, lam_b, -1.0, times_sigma=in_t)
            got = float(np.dot(w, [poly(tau) for tau in nodes]))
            assert abs(got - want) < 1e-9 * max(1.0, abs(want)), (nodes, got, want)
    # ... and not for degree k: the order is k, not more.
    coef = np.append(coef, 1.0)
    a, b = var.start + 0.3 * span, var.start + 0.35 * span
    nodes = [a - span * 0.02 * i for i in range(order)][::-1]
    lam_a, lam_b = var.point(a)[0], var.point(b)[0]
    want = reference_integral(lambda lam: weight(lam) * poly(to_tau(lam)), lam_a, lam_b)
    got = float(np.dot(var.weights(nodes, a, b, lam_a, lam_b, -1.0, in_t), [poly(tau) for tau in nodes]))
    assert abs(got - want) > 1e-7 * abs(want)


@pytest.mark.parametrize("name", ["t", "logsnr"])
def test_quadrature_is_exact_for_degree_five(name):
    """The composite rule (six nearest nodes per interval) integrates a degree-5 polynomial in tau exactly on an
    uneven grid, in t (weights in lambda through t(lambda)) and in lambda."""
    sde = VPSDE()
    rng = np.random.default_rng(0)
    var = _Variable(sde, name, 1e-3)
    taus = np.sort(rng.uniform(var.start, var.end, 9)) if name == "t" else -np.sort(-rng.uniform(var.end, var.start, 9))
    taus = [var.start, *taus.tolist(), var.end]
    lams = [var.point(tau)[0] for tau in taus]
    coef = rng.standard_normal(QUADRATURE_POINTS)

    def poly(tau):
        u = (tau - var.start) / (var.end - var.start)
        return sum(c * u**j for j, c in enumerate(coef))

    psis = [torch.tensor([[poly(tau)]], dtype=torch.float64) for tau in taus]
    got = _quadrature(var, taus, lams, psis, len(taus) - 1).item()
    to_tau = (lambda lam: lam) if name == "logsnr" else (lambda lam: float(sde.t_from_logsnr(torch.tensor(lam))))
    want = sum(reference_integral(lambda lam: poly(to_tau(lam)), a, b) for a, b in zip(lams[:-1], lams[1:]))
    assert abs(got - want) < 1e-8 * max(1.0, abs(want)), (name, got, want)


@pytest.mark.parametrize("variable", ["t", "logsnr"])
def test_calls_stay_in_t_min_to_T_and_are_counted(variable):
    sde, mix = VPSDE(), make_mixture("gaussian", 3)
    x = mix.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []

    def score_fn(x, t):
        calls.append(t.detach().clone())
        return mix.score(x, t, sde)

    _, _, n = log_likelihood(
        score_fn,
        sde,
        x,
        t_min=1e-3,
        method="exponential",
        time_variable=variable,
        rtol=1e-4,
        atol=1e-4,
        generator=torch.Generator().manual_seed(0),
    )
    times = torch.cat(calls)
    assert n == len(calls) and times.min() >= 1e-3 - 1e-12 and times.max() <= sde.T + 1e-12


def test_hutchinson_estimate_is_unbiased_with_one_call_per_node():
    """K = 8 Rademacher probes on a correlated 4-D Gaussian: the mean of the 16 x 8 errors lies within 4 s.e. of
    zero (the integrator's own error at 1e-6 is ~1e-5 nats), every probe has its own accumulator."""
    sde, mix = VESDE(), make_mixture("gaussian", 4, seed=4)
    x = mix.sample(16, torch.Generator().manual_seed(1), dtype=torch.float64)
    logp, z, _ = log_likelihood_per_probe(
        mix.score_fn(sde),
        sde,
        x,
        method="exponential",
        num_probes=8,
        rtol=1e-6,
        atol=1e-6,
        generator=torch.Generator().manual_seed(2),
    )
    err = logp - sde.prior_logp(z)[:, None] + mix.log_prob(z, sde.T, sde)[:, None] - mix.log_prob(x, 1e-5, sde)[:, None]
    stderr = err.std() / math.sqrt(err.numel())
    assert logp.shape == (16, 8) and stderr > 0.01
    assert err.mean().abs() < 4 * stderr + 1e-3


def test_float64_state_reaches_tighter_errors_from_float32_data():
    """float32 data and score, dopri5 at 1e-8: a float64 state and accumulator (state_dtype) lands closer to the
    exact log-density than the float32 state does (whose rounding floor is ~1e-6 relative)."""
    sde, mix = VPSDE(), make_mixture("gaussian", 16, seed=7)
    x = mix.sample(4, torch.Generator().manual_seed(0), dtype=torch.float32)
    score = mix.score_fn(sde)
    exact = mix.log_prob(x.double(), 1e-5, sde)
    errs = {}
    for state_dtype in (None, "float64"):
        logp, z, _ = log_likelihood(score, sde, x, divergence="exact", rtol=1e-8, atol=1e-8, state_dtype=state_dtype)
        errs[state_dtype] = (
            (logp.double() - sde.prior_logp(z.double()) + mix.log_prob(z.double(), sde.T, sde) - exact).abs().max()
        )
        assert z.dtype == torch.float32
    assert errs["float64"] < errs[None], errs


def test_option_checks_draw_nothing_from_any_rng():
    state = torch.random.get_rng_state()
    check_ode_options(VPSDE(), 1e-5, 1e-5, 1e-5, "exponential", "hutchinson", "rademacher", 4, "auto", "float64", 4)
    assert torch.equal(state, torch.random.get_rng_state())
