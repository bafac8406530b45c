"""Restart sampling (Xu et al. 2023; samplers/restart.py).

* Against the authors' own `restart_sampler` (tests/fixtures/make_restart.py, Newbeeer/diffusion_restart_sampling
  8cbcb07), on the exact denoiser of a 4-D Gaussian mixture in float64 with seeded noise: every network input and
  noise level, and the sample: to 1e-12 with their restart grid built in float64 (the fixture's one change to
  their code), to their float32 grid's rounding (1e-6 in the levels, 1e-4 in the iterates) as it stands.
* Against exact answers: restarts move the exact marginal at t_min to the exact marginal at t_max (the forward
  kernel); with the exact score the sampler reproduces the mixture on every path (tests/test_samplers.py).
* What it adds: with a score whose error the ODE carries to the end, the restarts contract it (the paper's claim),
  measured against the same number of calls spent on the main run.
"""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS, check_sampler_options, count_nfe, run_sampler, time_grid
from samplers.restart import parse_intervals, restart_sample
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "restart.pt", weights_only=True)
FIXTURE_MIXTURE = GaussianMixture(FIXTURE["weights"], FIXTURE["means"], FIXTURE["stds"])


@pytest.mark.parametrize("name", sorted(FIXTURE["cases"]))
def test_equals_the_authors_restart_sampler(name):
    case = FIXTURE["cases"][name]
    kw = case["kwargs"]
    sde = make_sde("edm")
    ts = time_grid(sde, int(kw["num_steps"]) - 1, t_min=0.002, kind="karras")
    calls = []

    def score_fn(x, t):
        calls.append((x.clone(), float(t[0])))
        return FIXTURE_MIXTURE.score(x, t, sde)

    options = {
        "intervals": case["intervals"],
        "gamma": kw["restart_gamma"],
        "s_churn": kw.get("S_churn", 0.0),
        "s_tmin": kw["S_min"],
        "s_tmax": kw["S_max"],
        "s_noise": kw["S_noise"],
    }
    generator = torch.Generator().manual_seed(FIXTURE["seed"])
    ours = SAMPLERS["restart"](score_fn, sde, 80.0 * FIXTURE["latents"], ts, generator=generator, **options)
    assert len(calls) == len(case["sigmas"])
    levels = torch.tensor([t for _, t in calls], dtype=torch.float64)
    if name.endswith("_float64_grid"):  # their code with its restart grid in float64: equal to float64 rounding
        torch.testing.assert_close(levels, case["sigmas"], rtol=1e-13, atol=0)
        torch.testing.assert_close(torch.stack([x for x, _ in calls]), case["inputs"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours, case["out"], rtol=1e-12, atol=1e-12)
    else:  # as their code runs: its float32 restart grid (rounded in s^(1/7), then raised to the 7th: 7 x 6e-8)
        torch.testing.assert_close(levels, case["sigmas"], rtol=1e-6, atol=0)
        torch.testing.assert_close(torch.stack([x for x, _ in calls]), case["inputs"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours, case["out"], rtol=1e-4, atol=1e-4)


def test_without_restarts_it_is_edms_heun_sampler():
    sde = make_sde("vp")
    mix = GaussianMixture(FIXTURE["weights"], FIXTURE["means"], FIXTURE["stds"])
    ts = time_grid(sde, 12, t_min=1e-3, kind="logsnr")
    x_T = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in (0, 1):  # K = 0: no restart; K = 1 on an interval reached after the last step: none either
        ours = restart_sample(mix.score_fn(sde), sde, x_T, ts, intervals=[[3, k, 0.5, 1.0]] if k == 0 else [])
        edm = SAMPLERS["edm"](mix.score_fn(sde), sde, x_T, ts)
        torch.testing.assert_close(ours, edm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", ["vp", "subvp", "ve", "edm", "cosine", "rectified_flow"])
def test_the_restart_noise_is_the_paths_forward_kernel(path):
    """Exact marginal at the snapped t_min in, exact marginal at t_max out: data N(m, s^2) gives y = x / alpha ~
    N(m, s^2 + sigma~^2) at every level, and the restart's draw raises sigma~ from t_min to t_max. Checked on the
    state after the noise, as the network's first input in the restart."""
    sde = make_sde(path)
    m, s = 0.7, 0.3
    # A main run of one short step (its Heun error far below the test's resolution) to the level lo, then the
    # restart from lo to hi; the start is exact at the first level.
    level = 0.4 if path != "subvp" else 0.2
    lo, hi = 0.999 * level, 2.5 * level
    ts = sde.t_from_logsnr(-torch.log(torch.tensor([level, lo], dtype=torch.float64)))
    n = 200_000
    gen = torch.Generator().manual_seed(1)
    alpha0, sigma0 = (float(v) for v in sde.marginal(ts[:1]))
    x = alpha0 * (m + s * torch.randn(n, 1, generator=gen, dtype=torch.float64))
    x = x + sigma0 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    seen = []

    def score_fn(x, t):  # the exact score of N(alpha m, alpha^2 s^2 + sigma^2)
        alpha, sigma = sde.marginal(t[:1])
        seen.append((x.clone(), float(alpha[0]), float(sigma[0])))
        return -(x - alpha * m) / (alpha**2 * s**2 + sigma**2)

    restart_sample(score_fn, sde, x, ts, intervals=[[2, 1, lo, hi]], gamma=0.0, generator=gen)
    # Calls: the main Heun step (2 calls), then the restart's first call at t_max.
    x_up, alpha, sigma = seen[2]
    assert abs(sigma / alpha - hi) < 1e-9 * hi
    y = x_up / alpha
    var = s**2 + hi**2
    se_mean, se_var = (var / n) ** 0.5, var * (2 / n) ** 0.5
    assert abs(float(y.mean()) - m) < 5 * se_mean
    assert abs(float(y.var()) - var) < 5 * se_var


@pytest.mark.parametrize("path", ["edm", "vp"])
def test_restarts_contract_an_error_the_ode_carries_to_the_end(path):
    """Two modes at -1 and 1 (std 0.15, weights 1/2); the score is that of weights 0.9 / 0.1 above the noise level
    2 and exact below. The ODE keeps the mass split it has at level 2, so its samples carry the wrong weights to the
    end; Restart's noise from 0.1 to 1.5 (inside the exact region, where the modes mix) moves the split back
    towards 1/2 with every restart. n = 4,000: the fraction's standard error is 0.008."""
    sde = make_sde(path)
    true = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0], [1.0]]), torch.tensor([0.15, 0.15]))
    wrong = GaussianMixture(torch.tensor([0.9, 0.1]), true.means, torch.tensor([0.15, 0.15]))

    def score_fn(x, t):
        above = (torch.exp(-sde.logsnr(t.double())) > 2.0).to(x.dtype)[:, None]
        return above * wrong.score(x, t, sde) + (1 - above) * true.score(x, t, sde)

    def error(sampler, **options):
        g = torch.Generator().manual_seed(0)
        x = sde.prior_sampling((4000, 1), g).double()
        counted = count_nfe(score_fn)
        out = run_sampler(sampler, counted, sde, x, generator=g, t_min=2e-3, **options)
        return abs(float((out > 0).double().mean()) - 0.5), counted.nfe

    ode, ode_nfe = error("edm", steps=21)
    two, two_nfe = error("restart", steps=17, intervals=[[3, 2, 0.1, 1.5]])
    ten, _ = error("restart", steps=17, intervals=[[3, 10, 0.1, 1.5]])
    assert ode_nfe == two_nfe == 43
    assert ode > 0.1  # the ODE's error, at the calls of 2 restarts
    assert two < ode / 2
    assert ten < 0.032  # 4 standard errors


def test_intervals_read_as_lists_json_or_the_authors_restart_info():
    expected = ((3, 2, 0.06, 0.3), (4, 1, 1.09, 1.92))
    assert parse_intervals([[3, 2, 0.06, 0.3], (4, 1, 1.09, 1.92)]) == expected
    assert parse_intervals("[[3, 2, 0.06, 0.3], [4, 1, 1.09, 1.92]]") == expected
    assert parse_intervals('{"0": [3, 2, 0.06, 0.30], "1": [4, 1, 1.09, 1.92]}') == expected
    assert parse_intervals([]) == ()


def never_called(x, t):
    raise AssertionError("the score was evaluated before the intervals were checked")


@pytest.mark.parametrize(
    "intervals, message",
    [
        ("[[3, 2, 0.06]]", r"a restart interval is \[N_restart, K, t_min, t_max\], got \[3, 2, 0.06\]"),
        ([[1, 2, 0.06, 0.3]], r"restart interval \[1, 2, 0.06, 0.3\]: N_restart must be an integer >= 2"),
        ([[3, -1, 0.06, 0.3]], "K an integer >= 0"),
        ([[3, 1.5, 0.06, 0.3]], "K an integer >= 0"),
        ([[3, 2, 0.3, 0.06]], r"need noise levels 0 < t_min < t_max < inf"),
        ([[3, 2, -0.1, 0.3]], r"need noise levels 0 < t_min < t_max < inf"),
        ("3, 2, 0.06, 0.3", "restart intervals must be JSON like"),
        ([[3, 2, 1e-7, 0.3]], "t_min snaps to sigma = 0, below the grid's last level"),
        ([[3, 2, 1e4, 2e4]], "t_min snaps to the grid's first level"),
        ([[3, 2, 0.06, 0.3], [3, 1, 0.061, 0.2]], "which another interval restarts from"),
        ([[3, 2, 0.06, 1e6]], "t_max must lie above it and at most at the path's level at T"),
        ([[3, 2, 0.9, 0.93]], "t_min snaps to the level 0.9529; t_max must lie above it"),  # 0.9 -> 0.9529
    ],
)
def test_bad_intervals_are_refused_before_any_score_evaluation(intervals, message):
    sde = make_sde("vp")
    ts = time_grid(sde, 17, 1e-3, "logsnr")
    with pytest.raises(ValueError, match=message):
        check_sampler_options("restart", sde, steps=17, grid="logsnr", intervals=intervals)
    with pytest.raises(ValueError, match=message):
        restart_sample(never_called, sde, torch.randn(4, 2), ts, intervals=intervals)


def test_callback_sees_every_step_and_says_which_restart():
    sde = make_sde("ve")
    mix = GaussianMixture(FIXTURE["weights"], FIXTURE["means"], FIXTURE["stds"])
    ts = time_grid(sde, 6, 1e-3, "logsnr")
    levels = torch.exp(-sde.logsnr(ts))
    seen = []
    x_T = 50.0 * torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    restart_sample(mix.score_fn(sde), sde, x_T, ts, intervals=[[3, 2, float(levels[4]), float(levels[3])]],
                   callback=lambda info: seen.append((info["i"], info["restart"], float(info["t"]))))  # fmt: skip
    assert [(i, r) for i, r, _ in seen] == [(0, None), (1, None), (2, None), (3, None)] + [
        (3, (4, k)) for k in (0, 0, 1, 1)
    ] + [(4, None), (5, None)]
    assert all(abs(t - float(ts[4])) < 1e-12 for _, r, t in seen[5::2][:2])  # each restart ends at its t_min
