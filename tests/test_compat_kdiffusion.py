"""Our samplers against k-diffusion's own sampling code, through numbers it wrote (tests/fixtures/
make_kdiffusion_samplers.py, k-diffusion 0.1.1.post1): its Euler, Heun (Karras et al. 2022, Alg. 1 and Alg. 2 with
churn, and its Euler and DPM-2 steps with churn), Euler ancestral, DPM-Solver++(2M), DPM-Solver++(2M) SDE and (3M)
SDE, DPM-Solver-2 (its sample_dpm_2) and DPM-Solver++(2S) (its sample_dpmpp_2s_ancestral with eta 0), their ancestral
forms (its sample_dpm_2_ancestral and sample_dpmpp_2s_ancestral at eta 1 and 0.5), its DPM++ SDE (sample_dpmpp_sde,
its Brownian-tree noise replayed from the same draws as ours) and its linear multistep sampler, run on the exact
denoiser of a 4-D Gaussian mixture over its Karras grid (n = 10, sigma 80 -> 0.002, then 0), with seeded noise; and
its DPM-Solver-fast on a grid even in log sigma.

The same algorithm gives the same samples: on EDM's path (x = x_0 + t noise, so t is k-diffusion's sigma) directly,
and on the VP path through Karras et al.'s change of variables y = x / alpha_t, sigma~ = sigma_t / alpha_t (the grid
mapped to the VP times with those noise levels, x_T = alpha_T y_T, the same noise draws): every sampler here is
written from the path's marginals, so it must agree on both. k-diffusion's step to sigma = 0 is our final denoising.
k-diffusion's "heun" form of the two-point step (its 2M SDE with solver_type="heun", and its 3M SDE's second step)
is ours with solver_type="heun"; the default "midpoint" form differs from it by far more than float error, which
shows the comparison can fail.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS, time_grid
from samplers.nfe import count_nfe
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "kdiffusion_samplers.pt", weights_only=True)
MIXTURE = GaussianMixture(FIXTURE["weights"], FIXTURE["means"], FIXTURE["stds"])
LEVELS = FIXTURE["sigmas"][:-1]  # k-diffusion's grid without its final 0: the last one is our denoising time
SEED = FIXTURE["seed"]

# (k-diffusion's run: the fixture's case, our sampler, its options)
CASES = [
    ("euler", "ode", {"method": "euler", "variable": "sigma"}),
    ("euler", "ddim", {"eta": 0.0}),
    ("heun", "ode", {"method": "heun", "variable": "sigma"}),
    ("heun", "edm", {}),
    ("heun_churn", "edm", {"s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
    ("heun_churn_all", "edm", {"s_churn": 40.0}),
    ("euler", "edm", {"step": "euler"}),
    ("euler_churn", "edm", {"step": "euler", "s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
    ("dpm_2", "edm", {"step": "dpm_2"}),
    ("dpm_2_churn", "edm", {"step": "dpm_2", "s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
    ("euler_ancestral_eta1", "ddim", {"eta": 1.0}),
    ("euler_ancestral_eta05", "ddim", {"eta": 0.5}),
    ("dpmpp_2m", "dpm_solver", {"order": 2}),
    ("dpmpp_2m_sde_eta1", "dpm_solver", {"order": 2, "eta": 1.0}),
    ("dpmpp_2m_sde_eta05", "dpm_solver", {"order": 2, "eta": 0.5}),
    ("dpmpp_2m_sde_heun", "dpm_solver", {"order": 2, "eta": 1.0, "solver_type": "heun"}),
    ("dpmpp_3m_sde_eta0", "dpm_solver", {"order": 3, "third_order": "reference", "solver_type": "heun"}),
    ("dpmpp_3m_sde_eta1", "dpm_solver", {"order": 3, "eta": 1.0, "third_order": "reference", "solver_type": "heun"}),
    ("dpm_2", "dpm_solver", {"order": 2, "method": "singlestep", "prediction": "noise"}),  # DPM-Solver-2
    ("dpmpp_2s_ancestral_eta0", "dpm_solver", {"order": 2, "method": "singlestep"}),  # DPM-Solver++(2S)
    ("dpmpp_2s_ancestral_eta1", "dpm_solver", {"order": 2, "method": "singlestep", "eta": 1.0}),
    ("dpmpp_2s_ancestral_eta05", "dpm_solver", {"order": 2, "method": "singlestep", "eta": 0.5}),
    ("dpm_2_ancestral_eta1", "dpm_solver", {"order": 2, "method": "singlestep", "prediction": "noise", "eta": 1.0}),
    ("dpm_2_ancestral_eta05", "dpm_solver", {"order": 2, "method": "singlestep", "prediction": "noise", "eta": 0.5}),
    ("dpmpp_sde_eta1", "dpm_solver", {"order": 2, "method": "sde", "eta": 1.0}),
    ("dpmpp_sde_eta05", "dpm_solver", {"order": 2, "method": "sde", "eta": 0.5}),
    ("dpmpp_sde_eta0", "dpm_solver", {"order": 2, "method": "sde"}),
]
HEUN_FORM = {case: (sampler, options) for case, sampler, options in CASES if options.get("solver_type") == "heun"}


def path(name: str):
    """EDM's path with room above sigma = 80 (Alg. 2's churn raises the first level to 113; ours caps it at the
    path's top, k-diffusion does not), or VP (top noise level sigma~_T = 148)."""
    return make_sde("edm", sigma_max=160.0) if name == "edm" else make_sde("vp")


def grid_and_start(sde, path_name: str):
    """The fixture's noise levels as times of this path, and its x_T on this path (x = alpha y)."""
    ts = LEVELS.clone() if path_name == "edm" else sde.t_from_logsnr(-torch.log(LEVELS))  # EDM: t is the level
    alpha = sde.marginal(ts[:1])[0]
    return ts, float(alpha) * FIXTURE["x_T"]


def run(sampler: str, options: dict, path_name: str) -> torch.Tensor:
    sde = path(path_name)
    ts, x_T = grid_and_start(sde, path_name)
    torch.manual_seed(12345)  # our samplers must not read the global RNG: a different seed there changes nothing
    generator = torch.Generator().manual_seed(SEED)
    return SAMPLERS[sampler](MIXTURE.score_fn(sde), sde, x_T, ts, generator=generator, **options)


def test_karras_grid_equals_get_sigmas_karras():
    """Our Karras grid on EDM's path is k-diffusion's get_sigmas_karras(5, 0.1, 10) (without its final 0), to the
    float32 its linspace computes in (2e-8 relative)."""
    sde = make_sde("edm", sigma_max=10.0)
    ts = time_grid(sde, 4, t_min=0.1, kind="karras")
    torch.testing.assert_close(ts, FIXTURE["karras_5_0.1_10"][:-1], rtol=1e-7, atol=0)


@pytest.mark.parametrize("path_name", ["edm", "vp"])
@pytest.mark.parametrize("case, sampler, options", CASES, ids=[f"{c}-{s}" for c, s, _ in CASES])
def test_sampler_equals_kdiffusion(case, sampler, options, path_name):
    """Same input, same noise, same samples: float64 throughout, agreement to ~1e-10 (VP: the grid's bisection)."""
    ours = run(sampler, options, path_name)
    torch.testing.assert_close(ours, FIXTURE["cases"][case], rtol=1e-8, atol=1e-8)


def fast_grid_and_start(sde, path_name: str, calls: int):
    """sample_dpm_fast's setting on this path: `calls` steps even in log sigma~ from 80 to 0.002, x_T = alpha_T y_T."""
    levels = torch.exp(torch.linspace(math.log(80.0), math.log(0.002), calls + 1, dtype=torch.float64))
    ts = levels if path_name == "edm" else sde.t_from_logsnr(-torch.log(levels))
    return ts, float(sde.marginal(ts[:1])[0]) * FIXTURE["x_T"]


@pytest.mark.parametrize("path_name", ["edm", "vp"])
@pytest.mark.parametrize("calls", [10, 11, 12])
def test_dpm_solver_fast_equals_sample_dpm_fast(calls, path_name):
    """k-diffusion's sample_dpm_fast is DPM-Solver-fast of order 3 in the noise form and the midpoint ("dpmsolver")
    type, its K steps even in -log sigma: our method="fast", prediction="noise" on the log-SNR grid of `calls`
    steps, without the final denoising (it has no step to 0); on the VP path through y = x / alpha. Its grid and
    coefficients follow torch's default dtype: float64 gives 1e-13, float32 (its default) its float32 rounding."""
    sde = path(path_name)
    ts, x_T = fast_grid_and_start(sde, path_name, calls)
    x = SAMPLERS["dpm_solver"](MIXTURE.score_fn(sde), sde, x_T, ts, order=3, method="fast", prediction="noise",
                               denoise=False)  # fmt: skip
    y = x / float(sde.marginal(ts[-1:])[0])
    torch.testing.assert_close(y, FIXTURE["dpm_fast"][calls], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(y, FIXTURE["dpm_fast_float32"][calls], rtol=1e-5, atol=2e-4)
    assert (y - FIXTURE["dpm_fast"][calls]).abs().max() < 1e-3 * (y - FIXTURE["dpm_fast_float32"][calls]).abs().max()


@pytest.mark.parametrize("path_name", ["edm", "vp"])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ancestral_dpm_solver_fast_equals_sample_dpm_fast_with_eta(eta, path_name):
    """k-diffusion's ancestral DPM-Solver-fast (its sample_dpm_fast with eta > 0: each step of order 3, 3, 3, 2
    ancestral, lambda_down capped at the end) is our method="fast" with the same eta, 11 calls, same noise."""
    sde = path(path_name)
    ts, x_T = fast_grid_and_start(sde, path_name, 11)
    g = torch.Generator().manual_seed(SEED)
    x = SAMPLERS["dpm_solver"](MIXTURE.score_fn(sde), sde, x_T, ts, order=3, method="fast", prediction="noise",
                               eta=eta, denoise=False, generator=g)  # fmt: skip
    y = x / float(sde.marginal(ts[-1:])[0])
    torch.testing.assert_close(y, FIXTURE["dpm_fast_eta"][eta], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path_name", ["edm", "vp"])
@pytest.mark.parametrize("case", sorted(FIXTURE["dpm_adaptive"]))
def test_pid_adaptive_dpm_solver_equals_sample_dpm_adaptive(case, path_name):
    """k-diffusion's sample_dpm_adaptive (DPM-Solver-12 / -23 under its PID controller, noise form, from sigma 80 to
    0.002; ancestral with eta > 0) is our method="adaptive_pid": the same samples, and the same tries, at one
    call fewer per rejected try (it computes the first prediction again)."""
    run = FIXTURE["dpm_adaptive"][case]
    order, eta, rtol = re.fullmatch(r"order(\d)_eta([\d.]+)_rtol([\d.e-]+)", case).groups()
    order, eta, rtol = int(order), float(eta), float(rtol)
    sde = path(path_name)
    ts, x_T = fast_grid_and_start(sde, path_name, 1)
    score_fn = count_nfe(MIXTURE.score_fn(sde))
    x = SAMPLERS["dpm_solver"](score_fn, sde, x_T, ts, order=order, method="adaptive_pid", prediction="noise",
                               eta=eta, rtol=rtol, atol={0.05: 0.0078, 1e-3: 1e-4}[rtol], denoise=False,
                               generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    torch.testing.assert_close(x / float(sde.marginal(ts[-1:])[0]), run["x"], rtol=1e-8, atol=1e-8)
    assert score_fn.nfe == run["nfe"] - run["n_reject"]


@pytest.mark.parametrize("path_name", ["edm", "vp"])
@pytest.mark.parametrize("order", [2, 4])
def test_lms_equals_sample_lms(order, path_name):
    """k-diffusion's sample_lms (Adams-Bashforth in sigma, its Lagrange weights by quadrature) is our `lms` in EDM's
    variables, on its Karras grid without the final step to 0 (a multistep step there; ours denoises instead)."""
    sde = path(path_name)
    ts, x_T = grid_and_start(sde, path_name)
    x = SAMPLERS["lms"](MIXTURE.score_fn(sde), sde, x_T, ts, order=order, denoise=False)
    torch.testing.assert_close(x / float(sde.marginal(ts[-1:])[0]), FIXTURE["lms"][order], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("case", HEUN_FORM)
def test_the_midpoint_form_is_not_kdiffusions_heun_form(case):
    """The same runs with our default solver_type="midpoint" differ from k-diffusion's heun-form ones by far more
    than float error (one step's form changes the samples), so the equalities above are not vacuous."""
    sampler, options = HEUN_FORM[case]
    sde = path("edm")
    ts, x_T = grid_and_start(sde, "edm")
    options = {**options, "solver_type": "midpoint"}
    x = SAMPLERS[sampler](MIXTURE.score_fn(sde), sde, x_T, ts, generator=torch.Generator().manual_seed(SEED), **options)
    assert (x - FIXTURE["cases"][case]).abs().max() > 1e-4


def test_fixture_cases_are_distinct():
    """The fixture's runs differ from each other (a broken fixture of identical outputs would pass everything),
    except k-diffusion's DPM++ SDE at eta 0, which is its DPM++(2S) at eta 0 (both ours with method "singlestep")."""
    same = {("dpmpp_2s_ancestral_eta0", "dpmpp_sde_eta0")}
    names = list(FIXTURE["cases"])
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            gap = (FIXTURE["cases"][a] - FIXTURE["cases"][b]).abs().max()
            assert gap < 1e-12 if (a, b) in same else gap > 1e-3, (a, b)
    assert math.isclose(float(LEVELS[0]), 80.0, rel_tol=1e-6) and math.isclose(float(LEVELS[-1]), 0.002, rel_tol=1e-6)
