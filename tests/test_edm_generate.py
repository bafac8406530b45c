"""Our samplers against EDM's own `generate.py`, through numbers its code wrote (tests/fixtures/make_edm_samplers.py,
NVlabs/edm commit 008a4e5), on the exact denoiser of a 4-D Gaussian mixture, float64, seeded noise:

* `edm_sampler` (Karras et al. 2022, Alg. 2), deterministic and with churn (S_churn 40, S_min 0.05, S_max 50,
  S_noise 1.003), 12 steps on its rho = 7 grid from 80 to 0.002: ours, `edm`, on EDM's path; its last step (to
  sigma = 0) is our final denoising. Every network input is compared, not only the sample.
* `ablation_sampler` with the VP column of its Table 1 (discretization, schedule and scaling "vp", epsilon_s =
  1e-3): Song et al.'s probability-flow ODE stepped in t. Ours, `ode` with method heun / euler in t on the uniform
  grid from 1 to 1e-3, is it at every one of its N - 1 steps. Its N-th step differs: EDM's is an Euler step of the
  same ODE from t = 1e-3 to t = 0, ours (score_sde's habit) is Tweedie's x0_hat at 1e-3. The test shows both: its
  sample is our last iterate plus that Euler step, and ours with `denoise=True` is the denoiser there.
* `ablation_sampler` with the VE discretisation (sigma geometric), schedule "linear" and no scaling (Heun in
  sigma): ours, `ode` with heun in sigma (VE's default variable) on the VE path's uniform grid, whose levels are the
  same geometric ladder; its last step (to sigma = 0) is our final denoising.
"""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS, time_grid
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "edm_samplers.pt", weights_only=True)
MIXTURE = GaussianMixture(FIXTURE["weights"], FIXTURE["means"], FIXTURE["stds"])
CASES = FIXTURE["cases"]


def run(name, sde, sampler, ts, x_T, **options):
    """Our sampler on the fixture's case; returns its sample and its iterates y = x / alpha at each grid time."""
    iterates = []
    alpha = sde.marginal(ts)[0]

    def callback(info):
        iterates.append(info["x"] / float(alpha[info["i"] + 1]))

    generator = torch.Generator().manual_seed(FIXTURE["seed"])
    out = SAMPLERS[sampler](MIXTURE.score_fn(sde), sde, x_T, ts, generator=generator, callback=callback, **options)
    return out, iterates


@pytest.mark.parametrize("name", ["edm_sampler", "edm_sampler_churn"])
def test_edm_sampler_equals_edms_code(name):
    case = CASES[name]
    kw = case["kwargs"]
    sde = make_sde("edm")
    ts = time_grid(sde, int(kw["num_steps"]) - 1, t_min=0.002, kind="karras")
    options = {}
    if "S_churn" in kw:
        options = {"s_churn": kw["S_churn"], "s_tmin": kw["S_min"], "s_tmax": kw["S_max"], "s_noise": kw["S_noise"]}
    else:  # without churn the network sees the iterates themselves, at the grid's levels, then the Heun points
        torch.testing.assert_close(case["sigmas"][0::2], ts, rtol=1e-12, atol=0)
    ours, iterates = run(name, sde, "edm", ts, 80.0 * FIXTURE["latents"], **options)
    torch.testing.assert_close(ours, case["out"], rtol=1e-10, atol=1e-10)
    if "S_churn" not in kw:
        torch.testing.assert_close(torch.stack(iterates), case["inputs"][2::2], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, method", [("ablation_vp_heun", "heun"), ("ablation_vp_euler", "euler")])
def test_ablation_sampler_vp_column_is_our_ode_in_t(name, method):
    case = CASES[name]
    steps = int(case["kwargs"]["num_steps"]) - 1
    per_step = 2 if method == "heun" else 1
    sde = make_sde("vp")  # beta_min 0.1, beta_d 19.9: EDM's defaults for this column give back the same betas
    ts = time_grid(sde, steps, t_min=1e-3, kind="uniform")
    sigma_T = float(sde.marginal(ts[:1])[1])
    ours, iterates = run(name, sde, "ode", ts, sigma_T * FIXTURE["latents"], method=method, variable="t", denoise=False)
    # Its network saw y_i = x_i / s(t_i) at the noise level sigma~(t_i) at the start of every step: our iterates.
    levels = torch.exp(-sde.logsnr(ts))
    torch.testing.assert_close(case["sigmas"][0::per_step][: steps + 1], levels, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.stack(iterates), case["inputs"][per_step::per_step], rtol=1e-10, atol=1e-10)
    # Its last step: Euler from t = 1e-3 to t = 0 on the same ODE, from our last iterate.
    t_last = torch.full((ours.shape[0],), 1e-3, dtype=torch.float64)
    drift = sde.reverse(ours, t_last, MIXTURE.score(ours, t_last, sde), probability_flow=True)[0]
    torch.testing.assert_close(ours - 1e-3 * drift, case["out"], rtol=1e-10, atol=1e-10)
    # Ours with the final denoising is x0_hat at t = 1e-3 instead. On VP sigma ~ sqrt(t) there, so EDM's Euler step
    # removes about half of x - x0_hat, which on the ODE's path is O(sigma~^2) (sigma~ = 0.0105): a gap far above
    # the agreement above, far below the data's scale.
    denoised = SAMPLERS["ode"](
        MIXTURE.score_fn(sde), sde, sigma_T * FIXTURE["latents"], ts, method=method, variable="t"
    )
    gap = float((denoised - case["out"]).abs().max())
    assert 1e-5 < gap < 1e-2


def test_ablation_sampler_ve_ladder_heun_in_sigma_is_ours():
    case = CASES["ablation_ve_linear_heun"]
    steps = int(case["kwargs"]["num_steps"]) - 1
    sde = make_sde("ve")
    ts = time_grid(sde, steps, t_min=1e-3, kind="uniform")
    ours, iterates = run("ablation_ve_linear_heun", sde, "ode", ts, 50.0 * FIXTURE["latents"], method="heun")
    torch.testing.assert_close(case["sigmas"][0::2], torch.exp(-sde.logsnr(ts)), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.stack(iterates), case["inputs"][2::2], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours, case["out"], rtol=1e-10, atol=1e-10)
