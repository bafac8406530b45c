"""Every sampler against exact answers: the Gaussian-mixture oracle's exact score under VP, sub-VP, VE and DDPM;
DDPM's Alg. 2 and SMLD's ancestral step written out independently; the probability-flow ODE's invertibility;
exact NFE counts; clear errors raised before any work.

Monte-Carlo tolerance used throughout: for n = 2000 samples we compare the means of 2d + K + 1 statistics
h(x) = (x, x^2, one-hot of the most probable component under p_0, log p_0(x)) with their exact expectations
(estimated from 40,000 exact draws), z = (mean_n - mean_ref) / sqrt(var h (1/n + 1/40000)), and require
|z| < 5 for all of them. For an exact sampler each z is ~N(0, 1) (P(|z| > 5) = 6e-7), so the checks fail only
for a sampler bias of several standard errors: e.g. a 10 % error in the variance of the modes moves
E[log p_0] by about 0.1 nats, 5-6 s.e. at n = 2000. The step counts below keep the solvers' own bias at
about 2 s.e. or less (measured at n = 20,000). Annealed Langevin dynamics (unadjusted Langevin, no Metropolis
step) keeps a larger bias at an affordable budget: E[log p_0] about 0.06 nats low on sub-VP at 808 NFE
(z = -8 at n = 20,000), so its checks use n = 1000 (resolution 5 s.e. = 0.18 nats).
"""

from __future__ import annotations

import functools

import pytest
import torch

from data.toy import GaussianMixture, make_mixture
from samplers import (
    CORRECTORS,
    GRIDS,
    PREDICTORS,
    SAMPLERS,
    ancestral_sample,
    check_sampler_options,
    count_nfe,
    run_sampler,
    solve_probability_flow,
    time_grid,
)
from samplers.langevin import langevin_corrector, snr_step_size
from sde import VPSDE, make_sde

SDE_NAMES = ["vp", "subvp", "ve", "ddpm", "cosine", "edm", "rectified_flow"]  # every path of sde.SDES
N, N_ALD, Z_MAX = 2000, 1000, 5.0
MIXTURE = make_mixture("gmm2d")
_M4 = make_mixture("gmm2d", dim=4, seed=1)
IMAGE_MIXTURE = GaussianMixture(_M4.weights, _M4.means, _M4.covs, shape=(1, 2, 2))  # image-shaped events


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batched linear algebra runs fastest on one thread (and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def statistics(mixture: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """h(x) = (x, x^2, one-hot most probable component under p_0, log p_0(x)) per sample, [n, 2d + K + 1]."""
    x = x.reshape(x.shape[0], -1).double()
    post = mixture.class_log_posterior(x, 0.0, VPSDE())  # VP at t = 0: alpha = 1, sigma = 0, i.e. p_0 itself
    assign = torch.nn.functional.one_hot(post.argmax(1), mixture.num_classes).double()
    return torch.cat([x, x**2, assign, mixture.log_prob(x)[:, None]], 1)


@functools.cache
def reference(mixture: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and variance of h under p_0, from 40,000 exact draws."""
    h = statistics(mixture, mixture.sample(40_000, torch.Generator().manual_seed(123), dtype=torch.float64))
    return h.mean(0), h.var(0), h.shape[0]


def assert_matches(mixture: GaussianMixture, x: torch.Tensor) -> None:
    """|z| < 5 for every statistic's mean (see the module docstring)."""
    assert torch.isfinite(x).all()
    mean, var, m = reference(mixture)
    h = statistics(mixture, x)
    z = (h.mean(0) - mean) / (var * (1 / h.shape[0] + 1 / m)).sqrt()
    assert z.abs().max() < Z_MAX, f"z-scores {[round(v, 1) for v in z.tolist()]}"


def ald_eps(sde_name: str, t_min: float = 1e-3) -> float:
    """ALD's eps = (sigma/alpha at t_min)^2: the top-level step equals the noise variance (stable below 4x)."""
    alpha, sigma = make_sde(sde_name).marginal(torch.tensor([t_min], dtype=torch.float64))
    return float(sigma / alpha) ** 2


def draw(sampler: str, sde_name: str, mixture: GaussianMixture, n: int = N, seed: int = 0, **options):
    """Run a sampler on the mixture's exact score from fresh prior noise; returns (samples, NFE counter)."""
    sde = make_sde(sde_name)
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sampling((n, *mixture.shape), g)
    score_fn = count_nfe(mixture.score_fn(sde))
    return run_sampler(sampler, score_fn, sde, x, generator=g, **options), score_fn


ORACLE_CASES = [
    ("ancestral", {"steps": 200}),
    ("ancestral", {"steps": 200, "variance": "posterior"}),
    ("pc", {"steps": 200}),  # reverse diffusion + Langevin (snr 0.16, per-sample step)
    ("pc", {"steps": 120, "predictor": "euler_maruyama", "corrector": "ald"}),
    ("pc", {"steps": 150, "predictor": "ancestral", "corrector": "langevin", "per_sample_step": False}),
    ("ald", {"steps": 100, "n_steps": 8, "grid": "logsnr"}),
    ("ode", {"steps": 1}),  # dopri5, rtol = atol = 1e-5
    ("ode", {"steps": 20, "method": "rk4", "grid": "logsnr"}),
    ("ddim", {"steps": 100, "grid": "quadratic"}),
    ("ddim", {"steps": 100, "eta": 0.5, "grid": "quadratic"}),  # eta = 1 is the ancestral sampler, tested below
    ("dpm_solver", {"steps": 30, "order": 3, "grid": "logsnr"}),
    ("dpm_solver", {"steps": 40, "order": 2, "grid": "logsnr"}),
    ("dpm_solver", {"steps": 40, "order": 2, "eta": 1.0, "grid": "logsnr"}),  # SDE-DPM-Solver++(2M)
    ("dpm_solver", {"steps": 40, "order": 3, "eta": 0.5, "grid": "quadratic"}),
    ("dpm_solver", {"steps": 40, "order": 2, "eta": 1.0, "prediction": "noise", "grid": "logsnr"}),  # SDE-DPM-Solver
    ("dpm_solver", {"steps": 30, "order": 3, "third_order": "reference", "grid": "logsnr"}),
    ("unipc", {"steps": 20, "order": 2, "grid": "logsnr"}),
    ("unipc", {"steps": 20, "order": 3, "variant": "bh1", "grid": "logsnr"}),
    ("sa_solver", {"steps": 30}),  # SA-Solver 3 / 4, tau = 1 in diffusers' window
    ("sa_solver", {"steps": 30, "predictor_order": 2, "corrector_order": 3, "tau": 0.0}),
    ("sa_solver", {"steps": 80, "prediction": "noise", "predictor_order": 2, "corrector_order": 3}),
    ("pndm", {"steps": 40, "grid": "logsnr"}),  # F-PNDM
    ("lms", {"steps": 50}),  # its default grid: quadratic, Karras on VE and EDM
    ("pndm", {"steps": 40, "warmup": "plms", "grid": "logsnr"}),
    ("pndm", {"steps": 40, "warmup": "ipndm", "grid": "logsnr"}),  # iPNDM
    ("dpm_solver", {"steps": 30, "order": 3, "method": "fast", "prediction": "noise", "grid": "logsnr"}),
    ("dpm_solver", {"steps": 1, "order": 3, "method": "adaptive", "rtol": 1e-2, "atol": 1e-3}),  # DPM-Solver-23
    ("dpm_solver", {"steps": 25, "order": 2, "method": "singlestep", "eta": 1.0, "grid": "logsnr"}),  # DPM++ 2S a
    ("dpm_solver", {"steps": 25, "order": 2, "method": "singlestep", "eta": 0.5, "prediction": "noise"}),  # DPM2 a
    ("dpm_solver", {"steps": 25, "method": "sde", "eta": 1.0, "grid": "logsnr"}),  # k-diffusion's DPM++ SDE
    ("dpm_solver", {"steps": 1, "order": 3, "method": "adaptive_pid", "rtol": 3e-3, "atol": 3e-4}),  # k-diffusion
    ("edm", {"steps": 40, "s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0}),  # its default grid: log-SNR
    ("edm", {"steps": 30, "s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0, "step": "dpm_2"}),  # k-diffusion's
    ("ode", {"steps": 20, "method": "heun", "grid": "logsnr"}),  # the path's variable: sigma on VE and EDM, t else
    ("restart", {"steps": 25, "intervals": [[4, 2, 0.06, 0.3], [3, 1, 1.0, 2.0]]}),  # Restart, 2 intervals, churn
]


def case_id(case) -> str:
    return case[0] + "-" + "-".join(f"{k}={v}" for k, v in case[1].items())


@pytest.mark.parametrize("sde_name", SDE_NAMES)
@pytest.mark.parametrize("case", ORACLE_CASES, ids=case_id)
def test_sampler_reproduces_mixture(case, sde_name):
    sampler, options = case
    if sde_name == "edm" and options.get("grid") == "quadratic":
        # Quadratic in t = sigma: the last step spans sigma ~ 0.05 -> t_min, biased on EDM's path (docs/samplers.md).
        options = {**options, "grid": "karras"}
    n = N_ALD if sampler == "ald" else N
    if sampler == "ald":
        options = {**options, "eps": ald_eps(sde_name)}
    x, _ = draw(sampler, sde_name, MIXTURE, n=n, **options)
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert_matches(MIXTURE, x)


IMAGE_CASES = [
    (ORACLE_CASES[i], sde_name)
    for i, sde_name in [(0, "ddpm"), (2, "subvp"), (5, "ve"), (6, "vp"), (8, "subvp"), (10, "vp")]
]


@pytest.mark.parametrize("case, sde_name", IMAGE_CASES, ids=[f"{case_id(c)}-{n}" for c, n in IMAGE_CASES])
def test_sampler_reproduces_image_shaped_mixture(case, sde_name):
    """Events shaped (1, 2, 2) run the same code (no hard-coded rank)."""
    sampler, options = case
    n = N_ALD if sampler == "ald" else N
    if sampler == "ald":
        options = {**options, "eps": ald_eps(sde_name)}
    x, _ = draw(sampler, sde_name, IMAGE_MIXTURE, n=n, **options)
    assert x.shape == (n, 1, 2, 2)
    assert_matches(IMAGE_MIXTURE, x)


def test_isotropic_oracle_equals_the_full_covariance_formulas():
    """Isotropic mixtures take a closed-form inverse; scores, densities and draws equal the general code."""
    iso = make_mixture("gmm2d", dim=5, seed=2)
    full = GaussianMixture(iso.weights, iso.means, iso.covs)
    full._iso_var = None
    sde = make_sde("vp")
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (torch.full((7,), 0.4, dtype=torch.float64), torch.linspace(0.01, 1, 7, dtype=torch.float64)):
        torch.testing.assert_close(iso.score(x, t, sde), full.score(x, t, sde), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(iso.log_prob(x, t, sde), full.log_prob(x, t, sde), rtol=1e-12, atol=1e-12)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(iso.sample(9, g1, dtype=torch.float64), full.sample(9, g2, dtype=torch.float64))


def test_shared_time_oracle_score_equals_general_path():
    """GaussianMixture.score's shared-time fast path equals its per-example path (responsibilities of B x K)."""
    for name in SDE_NAMES:
        sde = make_sde(name)
        x = 2 * torch.randn(20, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for t in (1e-3, 0.3, 1.0):
            t = torch.full((20,), t, dtype=torch.float64)
            logp, comp_scores = IMAGE_MIXTURE._component_log_probs(x, t, sde)
            general = (torch.softmax(logp, -1)[..., None] * comp_scores).sum(1).reshape(x.shape)
            torch.testing.assert_close(IMAGE_MIXTURE.score(x, t, sde), general, rtol=1e-9, atol=1e-9)


# ---- The ancestral step is DDPM's Alg. 2 on the DDPM chain and SMLD's ancestral step on VE. ---------------------
def ddpm_alg2(score_fn, sde, x, generator, variance):
    """Ho et al. 2020, Alg. 2 written from the chain's betas and alpha-bars (float64)."""
    betas, abar = sde.betas, sde.alphas_cumprod
    for i in range(sde.N, 0, -1):  # i = N..1, x_i -> x_{i-1}
        beta, ab = betas[i - 1], abar[i - 1]
        ab_prev = abar[i - 2] if i > 1 else torch.tensor(1.0, dtype=torch.float64)
        eps = -(1 - ab).sqrt() * score_fn(x, torch.full((x.shape[0],), i / sde.N, dtype=x.dtype))
        mean = (x - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
        sigma2 = beta if variance == "forward" else (1 - ab_prev) / (1 - ab) * beta
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if i > 1 else torch.zeros_like(x)
        x = mean + sigma2.sqrt() * z
    return x


@pytest.mark.parametrize("variance", ["forward", "posterior"])
def test_ancestral_step_is_ddpm_algorithm_2(variance):
    sde = make_sde("ddpm", N=50)
    score_fn = MIXTURE.score_fn(sde)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.arange(sde.N, 0, -1, dtype=torch.float64) / sde.N  # 1, (N-1)/N, ..., 1/N, then Tweedie at 1/N
    ours = ancestral_sample(score_fn, sde, x_T, ts, variance=variance, generator=torch.Generator().manual_seed(1))
    theirs = ddpm_alg2(score_fn, sde, x_T, torch.Generator().manual_seed(1), variance)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_ancestral_step_is_smld_ancestral_step_on_ve():
    """score_sde's AncestralSamplingPredictor for VE: x + (s_i^2 - s_{i-1}^2) score + sqrt(s_{i-1}^2 (s_i^2 -
    s_{i-1}^2) / s_i^2) z on NCSN's ladder, the last step to noise level 0 (i.e. Tweedie at sigma_min)."""
    sde, L = make_sde("ve"), 30
    score_fn = MIXTURE.score_fn(sde)
    ladder, ts = sde.noise_ladder(L), torch.linspace(1.0, 0.0, L, dtype=torch.float64)
    x_T = sde.prior_sampling((300, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = ancestral_sample(score_fn, sde, x_T, ts, variance="posterior", generator=torch.Generator().manual_seed(1))
    g, x = torch.Generator().manual_seed(1), x_T
    for i in range(L):
        sigma, adjacent = ladder[i], (ladder[i + 1] if i + 1 < L else torch.tensor(0.0, dtype=torch.float64))
        x_mean = x + score_fn(x, torch.full((300,), float(ts[i]), dtype=x.dtype)) * (sigma**2 - adjacent**2)
        std = (adjacent**2 * (sigma**2 - adjacent**2) / sigma**2).sqrt()
        x = x_mean + std * torch.randn(x.shape, generator=g, dtype=x.dtype) if i + 1 < L else x_mean
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)


def test_ddim_eta_one_is_ancestral_posterior_and_dpm_solver_1_is_ddim():
    sde = make_sde("subvp")
    score_fn = MIXTURE.score_fn(sde)
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = time_grid(sde, 25, 1e-3, "quadratic")
    run = functools.partial(lambda name, **kw: SAMPLERS[name](score_fn, sde, x_T, ts, **kw))
    ddim1 = run("ddim", eta=1.0, generator=torch.Generator().manual_seed(2))
    anc = run("ancestral", variance="posterior", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ddim1, anc, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(run("dpm_solver", order=1), run("ddim", eta=0.0), rtol=1e-10, atol=1e-10)
    # the stochastic DPM-Solver++ of order 1 at eta = 1 is the same posterior step, drawing the same noise
    sde1 = run("dpm_solver", order=1, eta=1.0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sde1, ddim1, rtol=1e-10, atol=1e-10)
    # the ancestral singlestep solver of order 1 is DDIM with the same eta, in either form
    for eta, prediction in ((0.4, "data"), (1.0, "noise")):
        ddim = run("ddim", eta=eta, generator=torch.Generator().manual_seed(2))
        anc = run("dpm_solver", order=1, method="singlestep", eta=eta, prediction=prediction,
                  generator=torch.Generator().manual_seed(2))  # fmt: skip
        torch.testing.assert_close(anc, ddim, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize(
    "order, eta, method, prediction",
    [
        (1, 0.3, "multistep", "data"),
        (2, 1.0, "multistep", "data"),
        (3, 0.6, "multistep", "data"),
        (2, 0.7, "singlestep", "data"),  # the ancestral solvers
        (2, 1.0, "singlestep", "noise"),
        (2, 1.0, "sde", "data"),  # k-diffusion's DPM++ SDE: both moves ancestral, nested Brownian noises
        (2, 0.5, "sde", "data"),
        (3, 1.0, "fast", "noise"),  # k-diffusion's ancestral DPM-Solver-fast: lambda_down capped at the end
    ],
)
def test_stochastic_dpm_solver_keeps_the_exact_marginals_of_point_mass_data(sde_name, order, eta, method, prediction):
    """For data at one point c the exact score gives x0_hat = c exactly, so every DPM-Solver++ update with any eta
    must carry x_t ~ N(alpha_t c, sigma_t^2) to N(alpha_s c, sigma_s^2) at every grid time: the e^{-eta h} factor,
    the (1 - e^{-(1 + eta) h}) data weight and the sqrt(1 - e^{-2 eta h}) noise must fit together (multistep);
    the step down to sigma~_down and the noise of std sigma~_up must add up to sigma~_next (ancestral). Checked on
    200,000 one-dimensional samples after 4 coarse steps (tolerances: 5 Monte-Carlo s.e. of mean and variance)."""
    sde, c, n = make_sde(sde_name), 0.7, 200_000

    def score_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return -(x - alpha[:, None] * c) / sigma[:, None] ** 2

    ts = time_grid(sde, 4, 1e-2, "logsnr")
    alpha_T, sigma_T = (float(v) for v in sde.marginal(ts[:1].double()))
    g = torch.Generator().manual_seed(3)
    x_T = alpha_T * c + sigma_T * torch.randn(n, 1, generator=g, dtype=torch.float64)
    options = {"order": order, "eta": eta, "method": method, "prediction": prediction}
    out = SAMPLERS["dpm_solver"](score_fn, sde, x_T, ts, denoise=False, generator=g, **options)
    alpha, sigma = (float(v) for v in sde.marginal(ts[-1:].double()))
    assert abs(float(out.mean()) - alpha * c) < 5 * sigma / n**0.5
    assert abs(float(out.var()) / sigma**2 - 1) < 5 * (2 / n) ** 0.5


@pytest.mark.parametrize("sde_name", ["ve", "vp", "edm"])
@pytest.mark.parametrize(
    "options",
    [
        {"method": "singlestep", "eta": 1.0},
        {"method": "singlestep", "eta": 1.0, "prediction": "noise"},
        {"method": "sde", "eta": 1.0},
    ],  # fmt: skip
    ids=["2S-a", "DPM2-a", "sde"],
)
def test_ancestral_solvers_call_the_network_only_on_the_grid_range(sde_name, options):
    """An ancestral step lands below sigma~_next (at eta = 1 on lambda_next + h, past VE's sigma_min on the last
    step), but its calls stay in [t_min, T]: the intermediate one halfway to lambda_down is at most lambda_next."""
    t_min = 1e-2
    _, score_fn = draw("dpm_solver", sde_name, MIXTURE, n=8, steps=6, t_min=t_min, order=2, grid="logsnr", **options)
    assert score_fn.nfe == 2 * 6 + 1 and score_fn.t_min_seen >= t_min * (1 - 1e-6)  # t in float32


# ---- Probability-flow ODE. --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_ode_forward_then_backward_returns_start(sde_name):
    sde = make_sde(sde_name)
    score_fn = count_nfe(MIXTURE.score_fn(sde))
    x0 = MIXTURE.sample(100, torch.Generator().manual_seed(0), dtype=torch.float64)
    span = torch.tensor([1e-3, 1.0], dtype=torch.float64)
    z = solve_probability_flow(score_fn, sde, x0, span, "dopri5", rtol=1e-8, atol=1e-8)
    back = solve_probability_flow(score_fn, sde, z, span.flip(0), "dopri5", rtol=1e-8, atol=1e-8)
    assert (z - x0).abs().max() > 0.1  # it went somewhere
    assert (back - x0).abs().max() < 1e-5
    assert 1e-3 <= score_fn.t_min_seen and score_fn.t_max_seen <= 1.0  # never outside [t_min, T]


def test_adaptive_ode_never_evaluates_below_t_min():
    for sde_name, t_min in [("vp", 1e-3), ("subvp", 1e-2), ("ve", 1e-4)]:
        _, score_fn = draw("ode", sde_name, MIXTURE, n=200, steps=1, t_min=t_min, rtol=1e-3, atol=1e-3)
        t_min32 = float(torch.tensor(t_min, dtype=torch.float32))  # the samples (and times) are float32
        assert score_fn.t_min_seen >= t_min32 and score_fn.t_max_seen <= 1.0


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_deterministic_solvers_converge_at_their_order(sde_name):
    """Pathwise RMS error against dopri5 at rtol = atol = 1e-10 (same x_T, no denoising) on a correlated Gaussian
    (a smooth flow): observed order log2(e_20 / e_40) at least DDIM 0.8 (order 1), DPM-Solver++(2M) and Heun
    1.5 (order 2), DPM-Solver++(3M) 2.0 (order 3, held near 2.4 by its order-1 and -2 warm-up steps), RK4 3.3."""
    import math

    gaussian = make_mixture("gaussian", dim=3)
    sde = make_sde(sde_name)
    score_fn = gaussian.score_fn(sde)
    x_T = sde.prior_sampling((100, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    span = torch.tensor([1.0, 1e-3], dtype=torch.float64)
    exact = solve_probability_flow(score_fn, sde, x_T, span, "dopri5", rtol=1e-10, atol=1e-10)
    cases = [
        ("ddim", {}, 0.8),
        ("dpm_solver", {"order": 2}, 1.5),
        ("dpm_solver", {"order": 3}, 2.0),
        ("ode", {"method": "heun"}, 1.5),
        ("ode", {"method": "rk4"}, 3.3),
    ]
    for sampler, options, min_order in cases:
        err = [
            float(
                (
                    SAMPLERS[sampler](score_fn, sde, x_T, time_grid(sde, n, 1e-3, "logsnr"), denoise=False, **options)
                    - exact
                )
                .pow(2)
                .mean()
                .sqrt()
            )
            for n in (20, 40)
        ]
        assert math.log2(err[0] / err[1]) > min_order, (sampler, options, err)


# ---- Langevin step size. ----------------------------------------------------------------------------------------
def test_per_sample_step_does_not_depend_on_the_batch():
    """The per-sample step of sample b is the same alone or in a batch; the batch-averaged step is not."""
    sde, t = make_sde("vp"), torch.full((500,), 0.3)
    g = torch.Generator().manual_seed(0)
    x = sde.prior_sampling((500, 2), g)
    score, noise, alpha = MIXTURE.score_fn(sde)(x, t), torch.randn(500, 2, generator=g), torch.ones(500)
    for per_sample in (True, False):
        whole = snr_step_size(sde, t, score, noise, alpha, 0.16, per_sample)[:4]
        part = snr_step_size(sde, t[:4], score[:4], noise[:4], alpha[:4], 0.16, per_sample)
        assert torch.equal(whole, part) == per_sample


def test_langevin_step_sizes():
    """Batch rule = score_sde's LangevinCorrector: 2 alpha (snr mean||noise|| / mean||score||)^2; per-sample rule
    = the same with the expected norms sqrt(d) and sqrt(d) / sigma_t: 2 alpha (snr sigma_t)^2."""
    sde, t, g = make_sde("subvp"), torch.full((64,), 0.4, dtype=torch.float64), torch.Generator().manual_seed(0)
    score, noise = (
        torch.randn(64, 1, 2, 2, generator=g, dtype=torch.float64),
        torch.randn(64, 1, 2, 2, generator=g, dtype=torch.float64),
    )
    alpha = sde.transition(t - 0.01, t)[0] ** 2
    batch = 2 * alpha * (0.2 * noise.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean()) ** 2
    torch.testing.assert_close(snr_step_size(sde, t, score, noise, alpha, 0.2, False), batch)
    per_sample = 2 * alpha * (0.2 * sde.marginal(t)[1]) ** 2
    torch.testing.assert_close(snr_step_size(sde, t, score, noise, alpha, 0.2, True), per_sample)


def test_per_sample_langevin_variance_does_not_depend_on_batch_size():
    """Langevin corrector (10 steps at VP t = 0.3) started from exact p_t draws must keep p_t: E log p_t within
    5 s.e. of exact (n = 600: s.e. ~0.04 nats) with batches of 4 and of 600. The batch-averaged step
    (score_sde) with batches of 4 drifts by ~0.4 nats (10 s.e.), so the check can fail."""
    sde, n = make_sde("vp"), 600
    g = torch.Generator().manual_seed(0)
    x0 = MIXTURE.sample(n, g, dtype=torch.float64)
    t = torch.full((n,), 0.3, dtype=torch.float64)
    xt = sde.perturb(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    exact = MIXTURE.log_prob(xt, t, sde)
    se = float(exact.std()) * (2 / n) ** 0.5  # two independent sets of n
    score_fn = MIXTURE.score_fn(sde)

    def corrected_logp(batch_size, per_sample):
        out = torch.cat(
            [
                langevin_corrector(
                    score_fn, sde, xb, tb, torch.ones_like(tb), g, snr=0.16, n_steps=10, per_sample_step=per_sample
                )
                for xb, tb in zip(xt.split(batch_size), t.split(batch_size))
            ]
        )
        return float(MIXTURE.log_prob(out, t, sde).mean())

    for batch_size in (4, n):
        assert abs(corrected_logp(batch_size, True) - float(exact.mean())) < 5 * se
    assert abs(corrected_logp(4, False) - float(exact.mean())) > 5 * se


def test_subvp_with_langevin_corrector_works():
    """score_sde's Langevin corrector crashes on sub-VP (no `alphas`); ours samples the mixture."""
    x, score_fn = draw(
        "pc",
        "subvp",
        MIXTURE,
        n=1000,
        steps=100,
        predictor="reverse_diffusion",
        corrector="langevin",
        n_corrector_steps=2,
    )
    assert score_fn.nfe == 301
    assert_matches(MIXTURE, x)


# ---- NFE, reproducibility, callbacks, every predictor with every corrector. ------------------------------------
@pytest.mark.parametrize(
    "sampler, options, expected",
    [
        ("pc", {"steps": 7}, 2 * 7 + 1),
        ("pc", {"steps": 7, "denoise": False}, 2 * 7),
        ("pc", {"steps": 7, "n_corrector_steps": 3, "predictor": "none"}, 3 * 7 + 1),
        ("pc", {"steps": 7, "corrector": "none", "denoise": False}, 7),
        ("ancestral", {"steps": 7}, 7 + 1),
        ("ald", {"steps": 7, "n_steps": 3, "grid": "logsnr"}, 8 * 3 + 1),
        ("ode", {"steps": 7, "method": "euler"}, 7 + 1),
        ("ode", {"steps": 7, "method": "heun"}, 2 * 7 + 1),
        ("ode", {"steps": 7, "method": "rk4", "denoise": False}, 4 * 7),
        ("ddim", {"steps": 7, "eta": 0.5}, 7 + 1),
        ("dpm_solver", {"steps": 7, "order": 3}, 7 + 1),
        ("unipc", {"steps": 7, "order": 3}, 7 + 1),
        ("unipc", {"steps": 7, "denoise": False}, 7),
        ("sa_solver", {"steps": 7}, 7 + 1),
        ("sa_solver", {"steps": 7, "corrector_order": 0, "denoise": False}, 7),
        ("pndm", {"steps": 7}, 7 + 9 + 1),
        ("lms", {"steps": 7}, 7 + 1),
        ("pndm", {"steps": 7, "warmup": "plms", "denoise": False}, 7 + 1),
        ("pndm", {"steps": 7, "warmup": "ipndm"}, 7 + 1),
        ("dpm_solver", {"steps": 7, "order": 3, "method": "fast"}, 7 + 1),
        ("dpm_solver", {"steps": 7, "order": 3, "method": "singlestep"}, 3 * 7 + 1),
        ("dpm_solver", {"steps": 7, "order": 2, "method": "singlestep", "eta": 1.0}, 2 * 7 + 1),
        ("dpm_solver", {"steps": 7, "method": "sde", "eta": 0.5, "denoise": False}, 2 * 7),
        ("edm", {"steps": 7, "s_churn": 5.0}, 2 * 7 + 1),
        ("edm", {"steps": 7, "s_churn": 5.0, "step": "euler"}, 7 + 1),
        ("edm", {"steps": 7, "s_churn": 5.0, "step": "dpm_2"}, 2 * 7 + 1),
        ("ode", {"steps": 7, "method": "heun", "variable": "sigma"}, 2 * 7 + 1),
        ("restart", {"steps": 7, "intervals": [[3, 2, 0.06, 0.3], [4, 1, 0.5, 1.0]]}, 2 * 7 + 1 + 2 * 2 * 2 + 3 * 2),
        ("restart", {"steps": 7, "intervals": [[5, 3, 0.06, 0.3]], "denoise": False}, 2 * 7 + 3 * 4 * 2),
    ],
)
def test_nfe_is_exact(sampler, options, expected):
    _, score_fn = draw(sampler, "vp", MIXTURE, n=8, **options)
    assert score_fn.nfe == expected


@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
@pytest.mark.parametrize("corrector", sorted(CORRECTORS))
@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_every_predictor_with_every_corrector(predictor, corrector, sde_name):
    steps = 25 if predictor.startswith("score_sde") else 5  # its DDPM ladder needs N > beta_max
    options = {"steps": steps, "predictor": predictor, "corrector": corrector, "n_corrector_steps": 2}
    if predictor == corrector == "none":
        with pytest.raises(ValueError, match="does nothing"):
            draw("pc", sde_name, IMAGE_MIXTURE, n=6, **options)
        return
    if predictor == "score_sde_ancestral" and sde_name not in ("vp", "ve", "ddpm", "edm"):  # its two ladders only
        with pytest.raises(ValueError, match="needs a VP or VE path"):
            draw("pc", sde_name, IMAGE_MIXTURE, n=6, **options)
        return
    x, score_fn = draw("pc", sde_name, IMAGE_MIXTURE, n=6, **options)
    assert x.shape == (6, 1, 2, 2) and torch.isfinite(x).all()
    assert score_fn.nfe == steps * ((predictor != "none") + 2 * (corrector != "none")) + 1


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_reproducible_with_a_generator_and_calls_back(sampler):
    seen = []
    options = {"steps": 4, "grid": "logsnr"} | ({"eta": 1.0} if sampler == "ddim" else {})
    a, _ = draw(sampler, "ve", MIXTURE, n=16, seed=3, callback=lambda info: seen.append(info["i"]), **options)
    b, _ = draw(sampler, "ve", MIXTURE, n=16, seed=3, **options)
    c, _ = draw(sampler, "ve", MIXTURE, n=16, seed=4, **options)
    assert torch.equal(a, b) and not torch.equal(a, c)
    expected = list(range(1)) if sampler == "ode" else list(range(5 if sampler == "ald" else 4))
    if sampler == "restart":  # its default interval (t_min 0.06 snaps to the level after step 2): 2 x 2 more steps
        expected = [0, 1, 2, 2, 2, 2, 2, 3]
    assert seen == expected


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_a_callback_that_changes_x_in_place_steers_every_sampler(sampler):
    """The callback contract (samplers/__init__.py) that inpainting relies on: setting info["x"] in place after
    every step (here its first coordinate to 5) carries into the sampler's next step and its output. Adaptive
    solvers call back once, at the end; with denoise=False the output keeps the projection."""

    def project(info):
        info["x"][..., 0] = 5.0

    x, _ = draw(sampler, "vp", MIXTURE, n=8, steps=6, denoise=False, callback=project, grid="logsnr")
    torch.testing.assert_close(x[..., 0], torch.full_like(x[..., 0], 5.0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(GRIDS))
@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_time_grids_run_from_T_to_t_min(kind, sde_name):
    sde = make_sde(sde_name)
    ts = time_grid(sde, 12, 2e-3, kind)
    assert ts.shape == (13,) and ts[0] == sde.T and ts[-1] == 2e-3 and (ts.diff() < 0).all()


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_logsnr_grid_is_uniform_in_logsnr(sde_name):
    sde = make_sde(sde_name)
    lam = sde.logsnr(time_grid(sde, 10, 1e-3, "logsnr"))
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(10), rtol=1e-8, atol=1e-8)


# ---- Clear errors before any work. ------------------------------------------------------------------------------
def never_called(x, t):
    raise AssertionError("the score was evaluated before the options were checked")


@pytest.mark.parametrize(
    "sampler, sde_name, options, message",
    [
        ("heun_edm", "vp", {"steps": 10}, r"unknown sampler 'heun_edm'; valid: \['ald', 'ancestral', 'ddim', 'dpm"),
        ("pc", "vp", {"steps": 0}, "number of steps must be a positive integer"),
        ("pc", "vp", {"steps": -3}, "number of steps must be a positive integer"),
        ("pc", "vp", {"steps": 10, "snr": 0.0}, "snr must be > 0"),
        ("pc", "vp", {"steps": 10, "snr": -0.1}, "snr must be > 0"),
        ("pc", "vp", {"steps": 10, "predictor": "heun"}, r"unknown predictor 'heun'; valid: \['ancestral'"),
        ("pc", "vp", {"steps": 10, "corrector": "mala"}, r"unknown corrector 'mala'; valid: \['ald', 'langevin'"),
        ("pc", "vp", {"steps": 10, "n_corrector_steps": 0}, "n_corrector_steps must be a positive integer"),
        ("ald", "ve", {"steps": 10, "n_steps": 0}, "n_steps must be a positive integer"),
        ("ode", "vp", {"steps": 10, "method": "rk45"}, r"unknown ODE method 'rk45'; valid:"),
        ("ddim", "vp", {"steps": 10, "eta": 1.5}, r"eta must lie in \[0, 1\]"),
        ("dpm_solver", "vp", {"steps": 10, "eta": -0.5}, r"eta must lie in \[0, 1\].*got -0.5"),
        ("dpm_solver", "vp", {"steps": 10, "order": 4}, r"unknown DPM-Solver / UniPC order 4; valid: \[1, 2, 3\]"),
        ("pc", "vp", {"steps": 10, "grid": "cosine"}, r"unknown time grid 'cosine'; valid: \['default', 'karras'"),
        ("ddim", "vp", {"steps": 10, "snr": 0.1}, r"unknown option\(s\) \['snr'\] for sampler 'ddim'"),
        # Pairs that cannot work: sigma_0 = 0 on VP-type SDEs; NCSN's eps on sub-VP's tiny last noise level.
        ("ancestral", "vp", {"steps": 10, "t_min": 0.0}, r"cannot stop at t_min = 0.0 on VPSDE\(.*sigma_t = 0"),
        ("ddim", "ddpm", {"steps": 10, "t_min": 0.0}, r"cannot stop at t_min = 0.0 on DiscreteVPSDE"),
        ("dpm_solver", "edm", {"steps": 10, "t_min": 0.0}, r"cannot stop at t_min = 0.0 on EDMSDE"),
        ("ald", "subvp", {"steps": 10, "eps": 2e-5}, "ALD step eps = 2e-05 is unstable"),
        ("sa_solver", "vp", {"steps": 10, "predictor_order": 5}, r"unknown SA-Solver predictor_order 5; valid"),
        ("sa_solver", "vp", {"steps": 10, "corrector_order": -1}, r"unknown SA-Solver corrector_order -1; valid"),
        ("sa_solver", "vp", {"steps": 10, "tau": -1.0}, r"SA-Solver tau must be a number >= 0, got -1.0"),
        ("sa_solver", "vp", {"steps": 10, "tau_sigma_min": 30.0}, r"tau_sigma_min must lie in \[0, tau_sigma_max"),
        ("sa_solver", "vp", {"steps": 10, "lower_order_final": "denoise"}, r"SA-Solver lower_order_final 'denoise'"),
        ("sa_solver", "vp", {"steps": 10, "rescale": "yes"}, r"SA-Solver rescale must be True or False"),
        ("sa_solver", "vp", {"steps": 10, "tau_at": "middle"}, r"unknown SA-Solver tau_at 'middle'"),
        ("sa_solver", "vp", {"steps": 10, "prediction": "v"}, r"unknown solver prediction 'v'"),
    ],
)
def test_bad_options_raise_clear_errors_before_any_work(sampler, sde_name, options, message):
    sde = make_sde(sde_name)
    with pytest.raises(ValueError, match=message):
        run_sampler(sampler, never_called, sde, torch.zeros(4, 2), **options)


def test_check_sampler_options_checks_properties_of_the_path_not_its_name():
    check_sampler_options("pc", make_sde("subvp"), steps=10, grid="uniform", t_min=1e-3, predictor="ancestral", snr=0.1)
    with pytest.raises(ValueError, match="cannot stop at t_min = 0"):
        check_sampler_options("ode", make_sde("subvp"), t_min=0.0)


@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_grids_can_start_below_T(kind):
    """t_max < T: every grid runs from t_max down to t_min (the noisiest times skipped), and t_max is checked."""
    sde = make_sde("cosine")
    ts = time_grid(sde, 10, 1e-3, kind, t_max=0.99608)
    assert ts[0] == 0.99608 and ts[-1] == 1e-3 and (ts.diff() < 0).all()
    with pytest.raises(ValueError, match="t_max must lie in"):
        run_sampler("ddim", never_called, sde, torch.zeros(4, 2), steps=5, t_max=1.5)
