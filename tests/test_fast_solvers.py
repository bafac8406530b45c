"""The few-step solvers against exact answers: orders of convergence measured against the exact probability-flow
map of Gaussian data (no reference solver), one DPM-Solver++(3M) step against numerical quadrature when the data
prediction is exactly quadratic in lambda, EDM's Alg. 1 and Alg. 2 written out independently (VE, sigma = t), and
the order-lowering conventions of the libraries.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from data.toy import make_mixture
from samplers import SAMPLERS, CountingScoreFn, run_sampler, time_grid
from samplers.dpm_solver import dpm_solver_update, final_order
from samplers.dpm_solver_singlestep import pid_adaptive_solve
from sde import make_sde

GAUSSIAN = make_mixture("gaussian", dim=3)


def flow_error(sampler: str, sde_name: str, steps: int, grid: str = "logsnr", **options) -> float:
    """RMS distance of the sampler's x_{t_min} (no denoising) to the exact flow map of x_T, Gaussian data."""
    sde = make_sde(sde_name)
    x_T = sde.prior_sampling((200, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = GAUSSIAN.flow_map(x_T, sde.T, 1e-3, sde)
    ts = time_grid(sde, steps, 1e-3, grid)
    x = SAMPLERS[sampler](GAUSSIAN.score_fn(sde), sde, x_T, ts, denoise=False, **options)
    return float((x - exact).pow(2).mean().sqrt())


def order(sampler: str, sde_name: str, steps=(20, 40, 80), **options) -> list[float]:
    err = [flow_error(sampler, sde_name, n, **options) for n in steps]
    return [math.log2(a / b) for a, b in zip(err, err[1:])]


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_third_order_dpm_solver_is_third_order_and_the_reference_coefficient_second(sde_name, prediction):
    """Measured against the exact flow map on the log-SNR grid at 20 -> 40 -> 80 steps: the exact quadratic term
    converges at order >= 2.8 (about 4 here; 3.2-3.8 in the noise form), the libraries' half coefficient at about
    2 (measured 2.0-2.6), for DPM-Solver++ (data prediction) and DPM-Solver (noise prediction) alike."""
    exact = order("dpm_solver", sde_name, order=3, prediction=prediction)
    reference = order("dpm_solver", sde_name, order=3, third_order="reference", prediction=prediction)
    assert min(exact) >= 2.8, exact
    assert 1.8 <= reference[-1] <= 2.5, reference
    assert flow_error("dpm_solver", sde_name, 40, order=3, prediction=prediction) < flow_error(
        "dpm_solver", sde_name, 40, order=3, third_order="reference", prediction=prediction
    )


@pytest.mark.parametrize(
    "sampler, options, lo, hi",
    [
        ("ddim", {}, 0.8, 1.3),
        ("dpm_solver", {"order": 2}, 1.8, 2.3),
        ("dpm_solver", {"order": 2, "prediction": "noise"}, 1.8, 2.3),
        ("dpm_solver", {"order": 2, "method": "singlestep"}, 1.8, 2.3),
        ("dpm_solver", {"order": 3, "method": "singlestep"}, 2.6, 3.5),
        ("dpm_solver", {"order": 3, "method": "singlestep", "prediction": "noise"}, 2.6, 3.5),
        ("dpm_solver", {"order": 2, "method": "fast"}, 1.8, 2.3),
        ("lms", {"order": 1}, 0.8, 1.2),  # Adams-Bashforth in EDM's sigma: order k
        ("lms", {"order": 2}, 1.7, 2.3),
        ("lms", {"order": 3}, 2.5, 3.3),
        ("lms", {"order": 4}, 3.2, 4.5),
        ("pndm", {}, 1.8, 2.3),  # F-PNDM: second order, as Liu et al. 2022 prove
        ("pndm", {"warmup": "plms"}, 1.8, 2.3),
        ("unipc", {"order": 1}, 1.7, 2.4),  # UniP-1 + UniC-1: order 2 at one NFE per step
        ("unipc", {"order": 2}, 2.7, 4.5),  # UniP-2 + UniC-2: order 3
        ("unipc", {"order": 2, "prediction": "noise"}, 2.7, 4.5),
        ("sa_solver", {"tau": 0.0, "predictor_order": 2, "corrector_order": 0}, 1.8, 2.3),  # SA-Predictor: p
        ("sa_solver", {"tau": 0.0, "predictor_order": 1, "corrector_order": 2}, 1.8, 2.4),  # min(p + 1, c)
        ("sa_solver", {"tau": 0.0, "predictor_order": 2, "corrector_order": 3}, 2.7, 3.5),
        ("sa_solver", {"tau": 0.0, "predictor_order": 2, "corrector_order": 3, "prediction": "noise"}, 2.7, 3.5),
        ("sa_solver", {"tau": 0.0, "predictor_order": 3, "corrector_order": 4}, 3.0, 4.5),
        ("ode", {"method": "heun"}, 1.8, 2.4),
        ("ode", {"method": "heun", "variable": "sigma"}, 1.8, 2.4),
        ("ode", {"method": "rk4"}, 3.5, 4.6),
    ],
)
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_solvers_converge_at_their_stated_order(sampler, options, lo, hi, sde_name):
    """The order each docstring states, measured at 40 -> 80 steps against the exact flow map."""
    measured = order(sampler, sde_name, steps=(40, 80), **options)[0]
    assert lo <= measured <= hi, measured


def test_dpm_solver_fast_spends_exactly_its_calls():
    """DPM-Solver-fast (Lu et al. 2022a): orders 3, ..., 3 then (2, 1), (1) or (2) sum to the budget; the
    sampler makes exactly `steps` calls (+1 denoising) on every grid; with order 1 it is DDIM on the same grid, and
    with order 2 and an even budget on the uniform grid it is singlestep DPM-Solver-2 on every second time, calling at
    the times in between (their midpoints in t)."""
    from samplers.dpm_solver_singlestep import fast_orders

    assert (
        fast_orders(12, 3) == [3, 3, 3, 2, 1]
        and fast_orders(10, 3) == [3, 3, 3, 1]
        and fast_orders(11, 3) == [3] * 3 + [2]
    )
    assert fast_orders(7, 2) == [2, 2, 2, 1] and fast_orders(3, 1) == [1, 1, 1]
    for calls in range(1, 31):
        for k in (1, 2, 3):
            orders = fast_orders(calls, k)
            assert sum(orders) == calls and max(orders) <= k and orders == sorted(orders, reverse=True)
    sde = make_sde("vp")
    x_T = sde.prior_sampling((50, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    for grid in ("logsnr", "uniform", "quadratic"):
        for steps in (1, 2, 5, 9, 10, 11):
            for k in (1, 2, 3):
                score = CountingScoreFn(GAUSSIAN.score_fn(sde))
                run_sampler("dpm_solver", score, sde, x_T, steps=steps, grid=grid, order=k, method="fast")
                assert score.nfe == steps + 1, (grid, steps, k, score.nfe)
        ts = time_grid(sde, 10, 1e-3, grid)
        fast_1 = SAMPLERS["dpm_solver"](GAUSSIAN.score_fn(sde), sde, x_T, ts, order=1, method="fast")
        ddim = SAMPLERS["dpm_solver"](GAUSSIAN.score_fn(sde), sde, x_T, ts, order=1)
        torch.testing.assert_close(fast_1, ddim, rtol=1e-12, atol=1e-12)
    ts = time_grid(sde, 10, 1e-3, "uniform")
    fast_2 = SAMPLERS["dpm_solver"](GAUSSIAN.score_fn(sde), sde, x_T, ts, order=2, method="fast")
    single_2 = SAMPLERS["dpm_solver"](
        GAUSSIAN.score_fn(sde), sde, x_T, ts[::2], order=2, method="singlestep", inner="t"
    )
    torch.testing.assert_close(fast_2, single_2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_dpm_solver_fast_third_order_converges_at_least_at_second_order(sde_name):
    """Its last step is of order 1 or 2 and as long in lambda as the others, so DPM-Solver-fast with order 3 is
    second order in the limit (measured 2.3-2.7 at 42 -> 84 -> 168 calls against the exact flow map) and ~100x more
    accurate than with order 2 at 84 calls."""
    measured = order("dpm_solver", sde_name, steps=(42, 84, 168), order=3, method="fast")
    assert min(measured) >= 2.0, measured
    third = flow_error("dpm_solver", sde_name, 84, order=3, method="fast")
    assert 30 * third < flow_error("dpm_solver", sde_name, 84, order=2, method="fast")


@pytest.mark.parametrize(
    "sde_name, order, method",
    [(p, k, "adaptive") for p in ("vp", "ve", "cosine") for k in (2, 3)]
    + [(p, k, "adaptive_pid") for p in ("vp", "ve") for k in (2, 3)],
)
def test_adaptive_dpm_solver_error_follows_its_tolerance(sde_name, order, method):
    """DPM-Solver-12 / -23 (Lu et al. 2022a) against the exact flow map of Gaussian data: 100x tighter tolerances
    (0.1 / 0.01 to 1e-3 / 1e-4) give >= 30x smaller errors (measured 66-930x), below 5e-4 at 1e-3 / 1e-4 (measured
    5e-6-2.3e-4); only the grid's ends matter (5 or 40 steps: the same samples and calls). k-diffusion's PID control
    ("adaptive_pid", its error an RMS over the batch in y = x / alpha): 156-464x, 3.6e-5-7.0e-4 (bound 1e-3), in
    fewer calls; not on the cosine chain, whose sigma~_T = 2e4 sets its tolerance (see compose/biased.py)."""
    sde = make_sde(sde_name)
    x_T = sde.prior_sampling((200, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = GAUSSIAN.flow_map(x_T, sde.T, 1e-3, sde)

    def run(rtol, atol, steps=10):
        score = CountingScoreFn(GAUSSIAN.score_fn(sde))
        ts = time_grid(sde, steps, 1e-3, "logsnr")
        x = SAMPLERS["dpm_solver"](score, sde, x_T, ts, order=order, method=method, rtol=rtol, atol=atol,
                                   denoise=False)  # fmt: skip
        return x, float((x - exact).pow(2).mean().sqrt()), score.nfe

    (_, loose, _), (x, tight, calls) = run(1e-1, 1e-2), run(1e-3, 1e-4)
    assert loose > 30 * tight and tight < (5e-4 if method == "adaptive" else 1e-3), (loose, tight)
    for steps in (5, 40):
        other, _, other_calls = run(1e-3, 1e-4, steps)
        assert other_calls == calls
        torch.testing.assert_close(other, x, rtol=1e-12, atol=1e-12)


def test_adaptive_dpm_solver_raises_instead_of_looping():
    """A score that returns NaN, or a tolerance below what float64 can meet, ends in FloatingPointError."""
    sde = make_sde("vp")
    x_T = sde.prior_sampling((8, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="non-finite error estimate"):
        run_sampler("dpm_solver", lambda x, t: x * float("nan"), sde, x_T, steps=5, method="adaptive")
    with pytest.raises(FloatingPointError, match="the step underflowed"):
        run_sampler("dpm_solver", GAUSSIAN.score_fn(sde), sde, x_T, steps=5, method="adaptive", rtol=1e-30, atol=1e-30)
    # k-diffusion's PID solver: there a tolerance float64 cannot meet does not underflow the step (the error rounds
    # to 0 on steps of ~1e-7, which are accepted and grow 2.6x, then rejected), so it stops after max_rejections
    # rejected tries (1,000 by default; 50 here to keep the test short)
    with pytest.raises(FloatingPointError, match="non-finite error estimate"):
        run_sampler("dpm_solver", lambda x, t: x * float("nan"), sde, x_T, steps=5, method="adaptive_pid")
    lam = sde.logsnr(torch.tensor([1.0, 1e-3], dtype=torch.float64)).tolist()

    def pred(y, lam_form):  # the exact data prediction at y = x / alpha
        t = sde.t_from_logsnr(torch.tensor([lam_form], dtype=torch.float64)).expand(y.shape[0])
        x = sde.marginal(t)[0][:, None] * y
        return sde.denoise(x, t, GAUSSIAN.score(x, t, sde))

    y_T = x_T / float(sde.marginal(torch.tensor([1.0], dtype=torch.float64))[0])
    with pytest.raises(FloatingPointError, match=r"the step underflowed .*\(51 rejected tries\)"):
        pid_adaptive_solve(y_T, *lam, 3, 1.0, pred, rtol=1e-30, atol=1e-30, max_rejections=50)


def quadratic_x0_score(sde, coeffs):
    """A score whose data prediction is x0_hat(lambda) = c0 + c1 lambda + c2 lambda^2 for every x."""
    c0, c1, c2 = coeffs

    def score_fn(x, t):
        lam = sde.logsnr(t.double())[:, None]
        alpha, sigma = (v[:, None] for v in sde.marginal(t.double()))
        x0 = c0 + c1 * lam + c2 * lam**2
        return ((alpha * x0 - x) / sigma**2).to(x.dtype)

    return score_fn


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("sde_name", ["vp", "ve", "edm"])
def test_one_third_order_step_is_exact_for_a_quadratic_data_prediction(eta, sde_name):
    """x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s int_0^h (1 + eta) e^{-(1 + eta)(h - u)} x0(u) du + noise,
    with the integral by quadrature: the exact 3M step matches to 1e-9, the reference coefficient is off."""
    sde = make_sde(sde_name)
    coeffs = (0.3, -0.2, 0.05)
    ts = torch.tensor([0.7, 0.5, 0.35, 0.2], dtype=torch.float64) * sde.T
    alpha, sigma = sde.marginal(ts)
    lam = sde.logsnr(ts).tolist()
    x = torch.tensor([[1.2, -0.4]], dtype=torch.float64)
    score_fn = quadratic_x0_score(sde, coeffs)
    x0s = [sde.denoise(x, ts[i : i + 1], score_fn(x, ts[i : i + 1])) for i in range(3)]

    def x0(v):
        return coeffs[0] + coeffs[1] * v + coeffs[2] * v**2

    h = lam[3] - lam[2]
    integral = quad(lambda u: (1 + eta) * math.exp(-(1 + eta) * (h - u)) * x0(lam[2] + u), 0, h)[0]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = (sigma[3] / sigma[2] * math.exp(-eta * h)) * x + alpha[3] * integral
    expected = expected + sigma[3] * math.sqrt(-math.expm1(-2 * eta * h)) * noise * (eta > 0)
    got = {
        kind: dpm_solver_update(
            x,
            x0s,
            lam,
            (float(sigma[2]), float(sigma[3])),
            float(alpha[3]),
            eta,
            torch.Generator().manual_seed(5),
            kind,
        )
        for kind in ("exact", "reference")
    }
    assert (got["exact"] - expected).abs().max() < 1e-9
    assert (got["reference"] - expected).abs().max() > 1e-4


def test_lower_order_final_conventions():
    """'none' (k-diffusion), 'last' (Lu et al.'s code: the last step first order), 'denoise' (diffusers: the final
    denoising is the first-order step)."""
    orders = {kind: [final_order(3, i, 6, kind) for i in range(6)] for kind in ("none", "last", "denoise")}
    assert orders == {"none": [1, 2, 3, 3, 3, 3], "last": [1, 2, 3, 3, 2, 1], "denoise": [1, 2, 3, 3, 3, 2]}


def edm_algorithm_2(denoiser, sigmas, x, s_churn, s_tmin, s_tmax, s_noise, generator):
    """Karras et al. 2022, Alg. 2, written out for sigma(t) = t, s(t) = 1, with sigmas ending in 0. Line 4 samples
    eps_i at every step, used or not (gamma_i = 0 outside [S_tmin, S_tmax]), as EDM's own code does."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype) * s_noise
        x_hat = x + math.sqrt(max(sigma_hat**2 - sigma**2, 0.0)) * eps
        d = (x_hat - denoiser(x_hat, sigma_hat)) / sigma_hat
        x = x_hat + (sigma_next - sigma_hat) * d
        if sigma_next != 0:
            d_next = (x - denoiser(x, sigma_next)) / sigma_next
            x = x_hat + (sigma_next - sigma_hat) * (d / 2 + d_next / 2)
    return x


@pytest.mark.parametrize("s_churn", [0.0, 30.0])
def test_edm_sampler_is_karras_algorithm_2(s_churn):
    """On EDM's path (sigma = t, alpha = 1) with its Karras grid, ours equals Alg. 2 written out (and at
    S_churn = 0, Alg. 1; the `ode` sampler's Heun in sigma is the same deterministic method)."""
    mixture = make_mixture("gmm2d")
    sde = make_sde("edm")
    score_fn = mixture.score_fn(sde)

    def denoiser(x, sigma):
        t = torch.full((x.shape[0],), sigma, dtype=torch.float64)
        return sde.denoise(x, t, score_fn(x, t))

    ts = time_grid(sde, 12, 2e-3, "karras")
    x_T = sde.prior_sampling((64, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    options = {"s_churn": s_churn, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
    theirs = edm_algorithm_2(denoiser, [*ts.tolist(), 0.0], x_T, generator=torch.Generator().manual_seed(1), **options)
    ours = SAMPLERS["edm"](score_fn, sde, x_T, ts, generator=torch.Generator().manual_seed(1), **options)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    if s_churn == 0:
        heun = SAMPLERS["ode"](score_fn, sde, x_T, ts, method="heun", variable="sigma")
        assert torch.equal(heun, ours)


@pytest.mark.parametrize("sde_name", ["edm", "vp", "cosine"])
def test_edm_sampler_euler_and_dpm_2_steps_without_churn_are_the_ode_solvers(sde_name):
    """k-diffusion's Alg. 2 variants at S_churn = 0: step="euler" is the `ode` sampler's Euler in sigma and
    step="dpm_2" the noise-form singlestep DPM-Solver-2 (the midpoint in lambda = -log sigma~), on any path; with
    churn they differ from Heun's step and from each other."""
    mixture = make_mixture("gmm2d")
    sde = make_sde(sde_name)
    score_fn = mixture.score_fn(sde)
    ts = time_grid(sde, 10, 2e-3, "logsnr")
    x_T = sde.prior_sampling((64, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    run = lambda name, **kw: SAMPLERS[name](score_fn, sde, x_T, ts, generator=torch.Generator().manual_seed(1), **kw)  # noqa: E731
    euler = run("ode", method="euler", variable="sigma")
    torch.testing.assert_close(run("edm", step="euler"), euler, rtol=1e-10, atol=1e-10)
    dpm_2 = run("dpm_solver", order=2, method="singlestep", prediction="noise")
    torch.testing.assert_close(run("edm", step="dpm_2"), dpm_2, rtol=1e-10, atol=1e-10)
    churned = [run("edm", step=step, s_churn=20.0) for step in ("heun", "euler", "dpm_2")]
    assert min(float((a - b).abs().max()) for a, b in [churned[:2], churned[1:], churned[::2]]) > 1e-3


def test_edm_sampler_in_sigma_variables_serves_vp_paths():
    """Alg. 2 in y = x / alpha against sigma~ = sigma / alpha: on VP with churn it samples the mixture (mean
    log-density within 4 standard errors of the exact one) and costs 2 steps + 1 NFE."""
    mixture = make_mixture("gmm2d")
    sde = make_sde("vp")
    g = torch.Generator().manual_seed(0)
    calls = []

    def score_fn(x, t):
        calls.append(1)
        return mixture.score(x, t, sde)

    x = run_sampler(
        "edm", score_fn, sde, sde.prior_sampling((4000, 2), g), steps=40, grid="karras", generator=g, s_churn=10.0
    )
    assert len(calls) == 2 * 40 + 1
    logp = mixture.log_prob(x.double())
    ref = mixture.log_prob(mixture.sample(40_000, torch.Generator().manual_seed(1), dtype=torch.float64))
    se = math.sqrt(float(logp.var()) / len(logp) + float(ref.var()) / len(ref))
    assert abs(float(logp.mean() - ref.mean())) < 4 * se


@pytest.mark.parametrize(
    "sampler, options, message",
    [
        ("dpm_solver", {"third_order": "half"}, r"unknown third_order .*'half'; valid: \['exact', 'reference'\]"),
        ("dpm_solver", {"prediction": "eps"}, r"unknown solver prediction 'eps'; valid: \['data', 'noise'\]"),
        ("dpm_solver", {"lower_order_final": True}, r"unknown lower_order_final True; valid: \['denoise', 'last'"),
        ("unipc", {"variant": "bh3"}, r"unknown UniPC variant 'bh3'; valid: \['bh1', 'bh2'\]"),
        ("unipc", {"order": 4}, r"unknown DPM-Solver / UniPC order 4"),
        ("lms", {"order": 5}, r"unknown LMS order 5; valid: \[1, 2, 3, 4\]"),
        ("pndm", {"warmup": "rk4"}, r"unknown PNDM warm-up 'rk4'; valid: \['ipndm', 'plms', 'prk'\]"),
        ("edm", {"s_churn": -1.0}, r"s_churn must be a number >= 0"),
        ("edm", {"s_tmin": 2.0, "s_tmax": 1.0}, r"s_tmin must not exceed s_tmax"),
        ("edm", {"s_noise": 0.0}, r"s_noise must be > 0"),
        ("edm", {"step": "rk4"}, r"unknown EDM sampler step 'rk4'; valid: \['dpm_2', 'euler', 'heun'\]"),
        ("dpm_solver", {"method": "singlestep", "eta": 0.5, "order": 3}, r"ancestral singlestep .* order 1 or 2"),
        ("dpm_solver", {"method": "singlestep", "eta": 1.0, "inner": "t"}, r"ancestral .*got order=2, inner='t'"),
        ("dpm_solver", {"method": "sde", "order": 3}, r"method='sde' .* needs order=2, .*got order=3"),
        ("dpm_solver", {"method": "sde", "prediction": "noise"}, r"method='sde' .*prediction='noise'"),
        ("dpm_solver", {"method": "sde", "solver_type": "heun"}, r"method='sde' .*solver_type='heun'"),
        ("dpm_solver", {"method": "fast", "eta": 1.0, "inner": "t"}, r"ancestral fast DPM-Solver calls evenly in"),
        ("dpm_solver", {"method": "adaptive", "eta": 0.5}, r"adaptive DPM-Solver \(Lu et al.'s\) solves the ODE only"),
        ("dpm_solver", {"method": "adaptive_pid", "order": 1}, r"compares orders k and k - 1"),
        ("dpm_solver", {"method": "adaptive", "order": 1}, r"compares orders k and k - 1 \(DPM-Solver-12 or -23\)"),
        ("dpm_solver", {"method": "adaptive", "inner": "t"}, r"inner='t' places a singlestep DPM-Solver's"),
        ("dpm_solver", {"method": "adaptive", "rtol": 0.0}, r"rtol must be > 0"),
        (
            "dpm_solver",
            {"method": "rk45"},
            r"unknown DPM-Solver method 'rk45'; valid: \['adaptive', 'adaptive_pid', 'fast', 'multistep', 'sde'",
        ),
        (
            "dpm_solver",
            {"inner": "t"},
            r"inner='t' places a singlestep DPM-Solver's intermediate calls; it needs method=",
        ),
        ("dpm_solver", {"method": "singlestep", "inner": "sigma"}, r"unknown singlestep DPM-Solver's inner spacing"),
        ("ode", {"variable": "lambda"}, r"unknown ODE integration variable 'lambda'; valid: \['default', 'sigma'"),
    ],
)
def test_bad_solver_options_are_refused_before_any_work(sampler, options, message):
    def never_called(x, t):
        raise AssertionError("the score was evaluated before the options were checked")

    with pytest.raises(ValueError, match=message):
        run_sampler(sampler, never_called, make_sde("vp"), torch.zeros(4, 2), steps=5, **options)


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_sa_predictor_of_order_one_with_tau_one_is_the_first_order_sde_dpm_solver(sde_name, prediction):
    """tau = 1 at every level (tau_at="start": the last step too), predictor order 1, no corrector:
    SDE-DPM-Solver++(1) in the data form,
    SDE-DPM-Solver-1 in the noise form (Lu et al. 2022b), the same draws."""
    sde = make_sde(sde_name)
    ts = time_grid(sde, 12, 1e-3, "logsnr")
    x_T = sde.prior_sampling((64, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    sa = SAMPLERS["sa_solver"](GAUSSIAN.score_fn(sde), sde, x_T, ts, predictor_order=1, corrector_order=0, tau=1.0,
                               tau_sigma_min=0.0, tau_sigma_max=math.inf, tau_at="start", prediction=prediction,
                               generator=torch.Generator().manual_seed(1))  # fmt: skip
    sde_dpm = SAMPLERS["dpm_solver"](GAUSSIAN.score_fn(sde), sde, x_T, ts, order=1, eta=1.0, prediction=prediction,
                                     generator=torch.Generator().manual_seed(1))  # fmt: skip
    torch.testing.assert_close(sa, sde_dpm, rtol=1e-10, atol=1e-10)
