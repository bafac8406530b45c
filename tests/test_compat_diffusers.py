"""Our samplers against diffusers' schedulers on one exact noise predictor (the mixture oracle under DDPM's
1000-step chain): the same algorithm gives the same samples to float precision.

Needs the optional `compat` extra (`pip install -c .ci/constraints.txt -e ".[compat]"`, torch pinned so the CPU
build stays); skipped without it. diffusers' timestep k (0-based) is our t = (k + 1) / N, its final step to
sigma = 0 (final_sigmas_type "zero", or DDIM's alpha_prev = 1) is our final Tweedie denoising, and its samples
are float32 with float32 coefficients, ours float32 with float64 coefficients: they agree to ~1e-5.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from data.toy import make_mixture
from samplers import SAMPLERS, time_grid
from samplers.repaint import repaint_levels, repaint_sample
from sde import make_sde

diffusers = pytest.importorskip("diffusers", reason="the optional compat extra (diffusers) is not installed")

MIXTURE = make_mixture("gmm2d", dim=4, seed=3)
SDE = make_sde("ddpm")
N = SDE.N
CHAIN = {"num_train_timesteps": N, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
TOL = {"rtol": 1e-4, "atol": 2e-5}


def eps(x: torch.Tensor, k) -> torch.Tensor:
    """The exact noise predictor at diffusers' timestep k: eps* = -sigma_t score(x, t), t = (k + 1) / N."""
    t = torch.full((x.shape[0],), (int(k) + 1) / N, dtype=torch.float64)
    sigma = SDE.marginal(t)[1][:, None]
    return (-sigma * MIXTURE.score(x.double(), t, SDE)).float()


def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return MIXTURE.score(x, t, SDE)


def start(n: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


def run_diffusers(
    scheduler, x: torch.Tensor, seed: int | None = None, last: bool = True, **step_kwargs
) -> torch.Tensor:
    """diffusers' sampling loop; last=False stops before the final step to sigma = 0."""
    if seed is not None:
        step_kwargs["generator"] = torch.Generator().manual_seed(seed)
    for k in scheduler.timesteps if last else scheduler.timesteps[:-1]:
        x = scheduler.step(eps(x, k), k, x, **step_kwargs).prev_sample
    return x


def grid(timesteps) -> torch.Tensor:
    """Our time grid through diffusers' timesteps."""
    return torch.tensor([(int(k) + 1) / N for k in timesteps], dtype=torch.float64)


def test_oracle_agrees_with_the_chain():
    """The test's eps is the chain's exact one (a sanity check of the time convention)."""
    x = start(8)
    t = torch.full((8,), 500 / N, dtype=torch.float64)
    torch.testing.assert_close(eps(x, 499).double(), -SDE.marginal(t)[1][:, None] * score_fn(x.double(), t))


@pytest.mark.parametrize("variance", ["posterior", "forward"])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_ancestral_equals_ddpm_scheduler(steps, variance):
    """DDPM's Alg. 2 with the posterior variance ("fixed_small") or the forward one (beta_t, "fixed_large"): 1000
    steps, and 50 with 'leading' spacing."""
    variance_type = {"posterior": "fixed_small", "forward": "fixed_large"}[variance]
    sched = diffusers.DDPMScheduler(**CHAIN, clip_sample=False, variance_type=variance_type)
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T, seed=1)
    g = torch.Generator().manual_seed(1)
    ours = SAMPLERS["ancestral"](score_fn, SDE, x_T, grid(sched.timesteps), variance=variance, generator=g)
    # 1000 float32 steps accumulate rounding (diffusers' betas are float32 too): max |diff| 1.7e-4 measured.
    torch.testing.assert_close(ours, theirs, **(TOL if steps < 1000 else {"rtol": 1e-3, "atol": 5e-4}))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_equals_ddim_scheduler(eta):
    sched = diffusers.DDIMScheduler(**CHAIN, clip_sample=False, set_alpha_to_one=True)
    sched.set_timesteps(25)
    x_T = start()
    theirs = run_diffusers(sched, x_T, seed=2, eta=eta)
    g = torch.Generator().manual_seed(2)
    ours = SAMPLERS["ddim"](score_fn, SDE, x_T, grid(sched.timesteps), eta=eta, generator=g)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_diffusers_ddim_linspace_spacing_steps_to_a_different_time():
    """diffusers' DDIM with timestep_spacing="linspace" steps from t to t - N // n, not to the next timestep of its
    own schedule (documented in docs/samplers.md): here 979 -> 959 while the schedule's next timestep is 958."""
    sched = diffusers.DDIMScheduler(**CHAIN, clip_sample=False, timestep_spacing="linspace")
    sched.set_timesteps(50)
    second, third = (int(k) for k in sched.timesteps[1:3])
    assert (second, third) == (979, 958)
    assert second - N // 50 == 959 != third


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize(
    "order, eta, steps", [(2, 0.0, 20), (2, 0.0, 10), (3, 0.0, 20), (3, 0.0, 10), (2, 1.0, 20)], ids=str
)
def test_dpm_solver_equals_dpmsolver_multistep_scheduler(order, eta, steps, solver_type):
    """DPM-Solver++ 2M / 3M (the libraries' 3M coefficient: third_order="reference") and SDE-DPM-Solver++(2M),
    in both forms of the two-point step (solver_type). diffusers lowers 3M's second-to-last step below 15 steps: our
    lower_order_final="denoise"."""
    sched = diffusers.DPMSolverMultistepScheduler(
        **CHAIN,
        solver_order=order,
        algorithm_type="sde-dpmsolver++" if eta else "dpmsolver++",
        solver_type=solver_type,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T, seed=3)
    g = torch.Generator().manual_seed(3)
    final = "denoise" if steps < 15 else "none"
    ours = SAMPLERS["dpm_solver"](
        score_fn,
        SDE,
        x_T,
        grid(sched.timesteps),
        order=order,
        eta=eta,
        third_order="reference",
        solver_type=solver_type,
        lower_order_final=final,
        generator=g,
    )
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("order, variant, steps", [(2, "bh2", 10), (2, "bh1", 20), (3, "bh2", 10), (3, "bh1", 15)])
def test_unipc_equals_unipc_multistep_scheduler(order, variant, steps):
    """UniPC with both B(h). diffusers' bh1 final step to sigma = 0 multiplies B(h) = -inf by 0 and returns NaN
    (docs/samplers.md), so for bh1 both stop at the last noise level (before the final denoising)."""
    sched = diffusers.UniPCMultistepScheduler(
        **CHAIN, solver_order=order, solver_type=variant, lower_order_final=True, final_sigmas_type="zero"
    )
    sched.set_timesteps(steps)
    x_T = start()
    full = variant == "bh2"
    theirs = run_diffusers(sched, x_T, last=full)
    options = {"order": order, "variant": variant, "lower_order_final": "denoise", "denoise": full}
    ours = SAMPLERS["unipc"](score_fn, SDE, x_T, grid(sched.timesteps), **options)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_exact_third_order_differs_from_the_libraries():
    """The corrected 3M is not what diffusers computes (the comparison above is not vacuous)."""
    sched = diffusers.DPMSolverMultistepScheduler(**CHAIN, solver_order=3, algorithm_type="dpmsolver++")
    sched.set_timesteps(20)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    ours = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, grid(sched.timesteps), order=3, third_order="exact")
    assert (ours - theirs).abs().max() > 1e-3


class _SignFixedDPMSolver(diffusers.DPMSolverMultistepScheduler):
    """diffusers' sde-dpmsolver++ of order 3 with the 0.5 in its D2 coefficient added, not subtracted: its update
    plus 2 x 0.5 x alpha_t D2 (D2 recomputed as diffusers does). Written here as the evidence for the sign."""

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kwargs):
        out = super().multistep_dpm_solver_third_order_update(
            model_output_list, *args, sample=sample, noise=noise, **kwargs
        )
        i = self.step_index
        alphas_sigmas = [self._sigma_to_alpha_sigma_t(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2)]
        lam = [torch.log(a) - torch.log(s) for a, s in alphas_sigmas]
        h = lam[0] - lam[1]
        r0, r1 = (lam[1] - lam[2]) / h, (lam[2] - lam[3]) / h
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        d2 = ((m0 - m1) / r0 - (m1 - m2) / r1) / (r0 + r1)
        return out + alphas_sigmas[0][0] * d2


def test_diffusers_sde_third_order_has_the_wrong_sign_on_its_half():
    """diffusers' sde-dpmsolver++ order 3 writes the D2 coefficient as (1 - e^{-2h} - 2h)/(2h)^2 - 0.5, which tends
    to -1 as h -> 0 (a correction that must vanish with h does not); with +0.5 (the ODE form with h -> 2h) it
    equals our eta = 1 3M with the libraries' coefficient to float precision, and its samples are too wide: 20
    steps, 4000 samples, mean per-coordinate variance 0.66 against the data's 0.57 (ours 0.57)."""
    kwargs = dict(CHAIN, solver_order=3, algorithm_type="sde-dpmsolver++", lower_order_final=True)
    kwargs["final_sigmas_type"] = "zero"
    results = {}
    for name, cls in (("diffusers", diffusers.DPMSolverMultistepScheduler), ("sign fixed", _SignFixedDPMSolver)):
        sched = cls(**kwargs)
        sched.set_timesteps(20)
        results[name] = run_diffusers(sched, start(4000, seed=5), seed=6)
    ours = SAMPLERS["dpm_solver"](
        score_fn, SDE, start(4000, seed=5), grid(sched.timesteps), order=3, eta=1.0, third_order="reference",
        generator=torch.Generator().manual_seed(6),
    )  # fmt: skip
    # 20 float32 third-order SDE steps of 4000 samples (diffusers' coefficients float32, ours float64): median
    # |diff| 6e-7, 99.9 % below 2.2e-5, the largest 2.9-3.7e-5 from run to run on one 2-core x86 machine, 2e-5 on
    # another; so the tail gets atol 1e-4, the bulk is held to float precision.
    torch.testing.assert_close(ours, results["sign fixed"], rtol=1e-4, atol=1e-4)
    assert (ours - results["sign fixed"]).abs().median() < 2e-6
    assert (ours - results["diffusers"]).abs().max() > 0.5
    data_var = MIXTURE.sample(4000, torch.Generator().manual_seed(7), dtype=torch.float64).var(0).mean()
    err_ours = abs(ours.double().var(0).mean() / data_var - 1)
    err_diffusers = abs(results["diffusers"].double().var(0).mean() / data_var - 1)
    assert err_ours < 0.05 < 0.1 < err_diffusers, (err_ours, err_diffusers)


@pytest.mark.parametrize("correct_steps", [1, 2])
def test_pc_score_sde_loop_equals_score_sde_ve_scheduler(correct_steps):
    """diffusers' ScoreSdeVeScheduler driven as its ScoreSdeVePipeline does (score_sde's VE PC sampler: at each of N
    times the Langevin corrector, then the reverse-diffusion predictor on SMLD's ladder, the last predictor's mean as
    the sample) equals our PC with loop="score_sde", its predictor and its batch-averaged Langevin step."""
    n, snr = 50, 0.16
    ve = make_sde("ve", sigma_min=0.01, sigma_max=50.0)

    def ve_score(x, t):
        return MIXTURE.score(x.double(), t.double(), ve).float()

    sched = diffusers.ScoreSdeVeScheduler(num_train_timesteps=n, snr=snr, sigma_min=0.01, sigma_max=50.0,
                                          sampling_eps=1e-3)  # fmt: skip
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(256, 4, generator=g) * sched.init_noise_sigma
    x_T = x.clone()
    for t in sched.timesteps:
        t_vec = torch.full((x.shape[0],), float(t))
        for _ in range(correct_steps):
            x = sched.step_correct(ve_score(x, t_vec), x, generator=g).prev_sample
        out = sched.step_pred(ve_score(x, t_vec), t, x, generator=g)
        x, x_mean = out.prev_sample, out.prev_sample_mean
    g_ours = torch.Generator().manual_seed(4)
    torch.randn(256, 4, generator=g_ours)  # the prior draw, made above
    ours = SAMPLERS["pc"](ve_score, ve, x_T, torch.linspace(1.0, 1e-3, n, dtype=torch.float64),
                          predictor="score_sde_reverse_diffusion", corrector="langevin", snr=snr,
                          n_corrector_steps=correct_steps, per_sample_step=False, loop="score_sde",
                          generator=g_ours)  # fmt: skip
    # float32 both (diffusers draws the corrector's noise in float32 whatever the sample's dtype): median |diff| 5e-7,
    # 3 of 1024 coordinates above 2e-5 (at most 8e-5) after 50 levels of batch-normed Langevin steps.
    torch.testing.assert_close(ours, x_mean, rtol=1e-4, atol=2e-4)
    assert (ours - x_mean).abs().median() < 2e-6


def level_eps(x_in: torch.Tensor, sigma) -> torch.Tensor:
    """The exact noise predictor at the noise level sigma = sigma_t / alpha_t, given diffusers' scaled input
    x / sqrt(1 + sigma^2) (the chain's x_t at the time with that level; t from our path's closed-form inverse)."""
    t = SDE.t_from_logsnr(-torch.log(torch.tensor([float(sigma)], dtype=torch.float64))).expand(x_in.shape[0])
    return (-SDE.marginal(t)[1][:, None] * MIXTURE.score(x_in.double(), t, SDE)).float()


def run_karras_style(sched, steps: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffusers' loop for its sigma-space (k-diffusion style) schedulers: returns x_T (in x-space of the chain's
    first time), their samples and the distinct noise levels they stepped through (without the final 0)."""
    sched.set_timesteps(steps)
    x_T = start()
    x = x_T * sched.init_noise_sigma
    stochastic = "generator" in inspect.signature(sched.step).parameters and seed is not None
    kwargs = {"generator": torch.Generator().manual_seed(seed)} if stochastic else {}
    for k in sched.timesteps:
        x_in = sched.scale_model_input(x, k)
        x = sched.step(level_eps(x_in, sched.sigmas[sched.step_index]), k, x, **kwargs).prev_sample
    levels = torch.unique_consecutive(sched.sigmas.double())[:-1]
    return x_T * sched.init_noise_sigma / (1 + levels[0] ** 2).sqrt().float(), x, levels


@pytest.mark.parametrize(
    "name, scheduler, sampler, options",
    [
        ("EulerDiscrete", diffusers.EulerDiscreteScheduler, "ode", {"method": "euler", "variable": "sigma"}),
        ("Heun", diffusers.HeunDiscreteScheduler, "ode", {"method": "heun", "variable": "sigma"}),
        ("EulerAncestral", diffusers.EulerAncestralDiscreteScheduler, "ddim", {"eta": 1.0}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_sigma_space_schedulers_equal_ours(name, scheduler, sampler, options):
    """diffusers' k-diffusion-style schedulers on the DDPM chain (eps prediction, its interpolated sigmas, the last
    step to sigma = 0): Euler and Heun in EDM's sigma (our `ode` with variable="sigma"), Euler ancestral (our DDIM
    with eta = 1 in these variables); their final step to 0 is our final denoising. Same x_T (x-space), same noise."""
    sched = scheduler(**CHAIN)
    x_T, theirs, levels = run_karras_style(sched, 12, seed=5)
    ts = SDE.t_from_logsnr(-torch.log(levels))
    g = torch.Generator().manual_seed(5)
    ours = SAMPLERS[sampler](score_fn, SDE, x_T, ts, generator=g, **options)
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("order, steps", [(2, 12), (4, 12), (4, 25)])
def test_lms_equals_lms_discrete_scheduler(order, steps):
    """LMSDiscreteScheduler (Adams-Bashforth in sigma on the chain's interpolated sigmas) is our `lms`; both stop
    before its last step to sigma = 0, a multistep step there (ours denoises instead)."""
    sched = diffusers.LMSDiscreteScheduler(**CHAIN)
    sched.set_timesteps(steps)
    x_T = start()
    x = x_T * sched.init_noise_sigma
    for k in sched.timesteps[:-1]:
        x_in = sched.scale_model_input(x, k)
        x = sched.step(level_eps(x_in, sched.sigmas[sched.step_index]), k, x, order=order).prev_sample
    levels = sched.sigmas.double()[:-1]
    ts = SDE.t_from_logsnr(-torch.log(levels))
    x_T = x_T * sched.init_noise_sigma / (1 + levels[0] ** 2).sqrt().float()  # the chain's x at ts[0]
    ours = SAMPLERS["lms"](score_fn, SDE, x_T, ts, order=order, denoise=False)
    torch.testing.assert_close(ours / float(SDE.marginal(ts[-1:])[0]), x, **TOL)


def test_flow_match_euler_equals_ode_euler_on_rectified_flow():
    """FlowMatchEulerDiscreteScheduler (velocity prediction, shift 1, its sigmas ending in 0) is Euler in t on the
    rectified-flow path (sigma_t = t): our `ode` sampler with method="euler" in t, its last step to 0 our final
    denoising. The grid starts below t = 1, where the data prediction exists."""
    rf = make_sde("rectified_flow")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    levels = torch.linspace(0.98, 0.01, 16).tolist()
    sched.set_timesteps(sigmas=levels)
    x = start()
    x_T = x.clone()
    for k in sched.timesteps:
        sigma = float(sched.sigmas[sched.step_index if sched.step_index is not None else 0])
        t = torch.full((x.shape[0],), sigma, dtype=torch.float64)
        x0_hat = rf.denoise(x.double(), t, MIXTURE.score(x.double(), t, rf))
        velocity = ((x.double() - x0_hat) / sigma).float()  # E[noise - x_0 | x_t]
        x = sched.step(velocity, k, x).prev_sample
    ts = sched.sigmas[:-1].double()
    ours = SAMPLERS["ode"](lambda x, t: MIXTURE.score(x.double(), t, rf).float(), rf, x_T, ts, method="euler",
                           variable="t")  # fmt: skip
    torch.testing.assert_close(ours, x, **TOL)


def test_flow_match_heun_equals_ode_heun_on_rectified_flow():
    """FlowMatchHeunDiscreteScheduler (velocity prediction, Heun in t = sigma on the rectified-flow path, the second
    call at the next level; its last step a first-order one to 0) is our `ode` with method="heun" in t, whose
    final denoising is that last step. Same start below t = 1 as the Euler test."""
    rf = make_sde("rectified_flow")
    sched = diffusers.FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(12)
    x = start()
    sched.sigmas[0] = 0.98  # its grid starts at t = 1, where the data prediction does not exist; ours starts below
    x_T = x.clone()
    for k in sched.timesteps:
        if sched.step_index is None:
            sched._init_step_index(k)
        sigma = float(sched.sigmas[sched.step_index])
        t = torch.full((x.shape[0],), sigma, dtype=torch.float64)
        x0_hat = rf.denoise(x.double(), t, MIXTURE.score(x.double(), t, rf))
        x = sched.step(((x.double() - x0_hat) / sigma).float(), k, x).prev_sample
    ts = torch.unique_consecutive(sched.sigmas.double())[:-1]
    ours = SAMPLERS["ode"](lambda x, t: MIXTURE.score(x.double(), t, rf).float(), rf, x_T, ts, method="heun",
                           variable="t")  # fmt: skip
    torch.testing.assert_close(ours, x, **TOL)


EDM = make_sde("edm")


def edm_output(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """EDM's F for diffusers' EDM schedulers (prediction_type "epsilon", sigma_data 0.5): D = c_skip x + c_out F
    equals the mixture's exact denoiser at the noise level sigma of EDM's path (t = sigma)."""
    t = torch.full((x.shape[0],), float(sigma), dtype=torch.float64)
    d = EDM.denoise(x.double(), t, MIXTURE.score(x.double(), t, EDM))
    c_skip, c_out = 0.25 / (sigma**2 + 0.25), sigma * 0.5 / (sigma**2 + 0.25) ** 0.5
    return ((d - c_skip * x.double()) / c_out).float()


def run_edm_scheduler(sched, steps: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffusers' loop for its EDM-path schedulers: (x_T, their samples, their noise levels without the final 0)."""
    sched.set_timesteps(steps)
    x_T = start() * float(sched.sigmas[0])
    x = x_T.clone()
    kwargs = {"generator": torch.Generator().manual_seed(seed)} if seed is not None else {}
    for k in sched.timesteps:
        sched.scale_model_input(x, k)  # what a pipeline calls (the input scaling F would see)
        sigma = float(sched.sigmas[sched.step_index])
        x = sched.step(edm_output(x, sigma), k, x, **kwargs).prev_sample
    return x_T, x, sched.sigmas[:-1].double()


def test_edm_euler_scheduler_equals_ode_euler_in_sigma():
    """EDMEulerScheduler (no churn) on EDM's path with its preconditioning: Euler in sigma, its last step to 0 our
    final denoising."""
    sched = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, final_sigmas_type="zero")
    x_T, theirs, levels = run_edm_scheduler(sched, 12)
    ours = SAMPLERS["ode"](lambda x, t: MIXTURE.score(x, t, EDM), EDM, x_T, levels, method="euler", variable="sigma")
    torch.testing.assert_close(ours, theirs, **TOL)


def test_edm_euler_scheduler_churn_is_not_karras_algorithm_2():
    """EDMEulerScheduler's s_churn raises the noise level inside step(), after the model ran: it applies the output
    F(x_i; sigma_i) of the unchurned point to the churned x^ at sigma^ (D = c_skip(sigma^) x^ + c_out(sigma^) F),
    where Karras et al.'s Alg. 2 (and k-diffusion's sample_euler, our `edm` with step="euler") evaluates the model at
    (x^, sigma^). With churn on every step (so both draw the same noise) diffusers equals that formula written out,
    to float32, and differs from Alg. 2 by far more."""
    churn = {"s_churn": 10.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.003}
    sched = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, final_sigmas_type="zero")
    sched.set_timesteps(12)
    x_T = start() * float(sched.sigmas[0])
    x, g = x_T.clone(), torch.Generator().manual_seed(4)
    for k in sched.timesteps:
        sched.scale_model_input(x, k)
        x = sched.step(edm_output(x, float(sched.sigmas[sched.step_index])), k, x, generator=g, **churn).prev_sample
    levels = sched.sigmas.double().tolist()  # ends in 0
    y, g = x_T.double(), torch.Generator().manual_seed(4)
    gamma = min(churn["s_churn"] / (len(levels) - 1), 2**0.5 - 1)
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):  # the formula diffusers' step computes
        f = edm_output(y.float(), sigma).double()
        sigma_hat = sigma * (1 + gamma)
        y_hat = y + (sigma_hat**2 - sigma**2) ** 0.5 * churn["s_noise"] * torch.randn(y.shape, generator=g).double()
        d = 0.25 / (sigma_hat**2 + 0.25) * y_hat + sigma_hat * 0.5 / (sigma_hat**2 + 0.25) ** 0.5 * f
        y = y_hat + (sigma_next - sigma_hat) * (y_hat - d) / sigma_hat
    torch.testing.assert_close(y.float(), x, rtol=1e-4, atol=1e-4)
    score_fn = lambda z, t: MIXTURE.score(z, t, EDM)  # noqa: E731
    ours = SAMPLERS["edm"](score_fn, EDM, x_T, torch.tensor(levels[:-1]), step="euler",
                           generator=torch.Generator().manual_seed(4), **churn)  # fmt: skip
    assert float((ours - x).abs().max()) > 1e-2


@pytest.mark.parametrize("order, eta, steps", [(2, 0.0, 20), (3, 0.0, 10), (2, 1.0, 20)], ids=str)
def test_edm_dpm_solver_scheduler_equals_dpm_solver_on_edms_path(order, eta, steps):
    """EDMDPMSolverMultistepScheduler: DPM-Solver++ 2M / 3M and SDE-DPM-Solver++(2M) in EDM's sigma on EDM's path
    (the same algorithm as on the chain above; its Karras sigmas are float32)."""
    sched = diffusers.EDMDPMSolverMultistepScheduler(
        sigma_min=0.002,
        sigma_max=80.0,
        sigma_data=0.5,
        solver_order=order,
        algorithm_type="sde-dpmsolver++" if eta else "dpmsolver++",
        final_sigmas_type="zero",
    )
    x_T, theirs, levels = run_edm_scheduler(sched, steps, seed=3 if eta else None)
    ours = SAMPLERS["dpm_solver"](
        lambda x, t: MIXTURE.score(x, t, EDM),
        EDM,
        x_T,
        levels,
        order=order,
        eta=eta,
        third_order="reference",
        lower_order_final="denoise" if steps < 15 else "none",
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("order, steps", [(2, 20), (3, 20), (2, 10), (3, 10)], ids=str)
def test_noise_prediction_dpm_solver_equals_algorithm_type_dpmsolver(order, steps, solver_type):
    """The original multistep DPM-Solver (Lu et al. 2022a; `prediction="noise"`) is diffusers' algorithm_type
    "dpmsolver". Its last step goes to the chain's first step (final_sigmas_type "sigma_min": "zero" is refused for
    this algorithm), so ours ends there without the final denoising; below 15 steps diffusers makes that last step
    first order: our lower_order_final="last"."""
    sched = diffusers.DPMSolverMultistepScheduler(
        **CHAIN,
        solver_order=order,
        algorithm_type="dpmsolver",
        solver_type=solver_type,
        lower_order_final=True,
        final_sigmas_type="sigma_min",
    )
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    ts = torch.cat([grid(sched.timesteps), torch.tensor([1.0 / N], dtype=torch.float64)])
    ours = SAMPLERS["dpm_solver"](
        score_fn,
        SDE,
        x_T,
        ts,
        order=order,
        prediction="noise",
        third_order="reference",
        solver_type=solver_type,
        lower_order_final="last" if steps < 15 else "none",
        denoise=False,
    )
    torch.testing.assert_close(ours, theirs, **TOL)
    data_form = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, ts, order=order, third_order="reference",
                                       solver_type=solver_type, denoise=False)  # fmt: skip
    assert float((data_form - theirs).abs().max()) > 100 * TOL["atol"]  # a different method: the test can fail


@pytest.mark.parametrize(
    "order, solver_type, steps, eta",
    [(1, "midpoint", 12, 1.0), (2, "midpoint", 12, 1.0), (2, "heun", 20, 1.0), (2, "midpoint", 20, 0.0)],
    ids=str,
)
def test_noise_prediction_sde_dpm_solver_equals_algorithm_type_sde_dpmsolver(order, solver_type, steps, eta):
    """SDE-DPM-Solver (`prediction="noise"`, eta = 1) is diffusers' algorithm_type "sde-dpmsolver" (orders 1 and 2,
    its only eta), same noise draws; its last step goes to the chain's first step, as above, at diffusers' own
    float32 level there (1 - alphas_cumprod[0] = 1e-4 loses 4 digits in float32: t = 1.00014e-3, not 1e-3; the
    noise form's 2 sigma_t (e^h - 1) eps term feels it). This SDE amplifies float32 rounding about 10x (a 1e-6 change
    of x_T moves either's samples by 1e-5), so the bound is 3e-4 on the largest of 1024 coordinates, 1e-5 on the
    median; one step from the same inputs agrees to float32 (1e-6 relative). eta = 0 shows the test can fail."""
    sched = diffusers.DPMSolverMultistepScheduler(
        **CHAIN, solver_order=order, algorithm_type="sde-dpmsolver", solver_type=solver_type,
        lower_order_final=False, final_sigmas_type="sigma_min",
    )  # fmt: skip
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T, seed=11)
    ts = torch.cat([grid(sched.timesteps), SDE.t_from_logsnr(-torch.log(sched.sigmas[-1:].double()))])
    g = torch.Generator().manual_seed(11)
    ours = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, ts, order=order, prediction="noise", eta=eta,
                                  solver_type=solver_type, denoise=False, generator=g)  # fmt: skip
    if eta == 0:
        assert float((ours - theirs).abs().max()) > 1e-2
    else:
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=3e-4)
        assert float((ours - theirs).abs().median()) < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # NumPy 2 on its np.log of tensors
@pytest.mark.parametrize("order, steps", [(1, 10), (2, 10), (2, 20), (3, 10), (3, 20)], ids=str)
def test_deis_log_rho_equals_noise_form_with_exact_integrals(order, steps):
    """diffusers' DEISMultistepScheduler (Zhang & Chen 2022's exponential integrator, its log-rho Adams-Bashforth
    form: the Lagrange polynomial in log rho = -lambda through the last k noise predictions, integrated exactly in
    rho) is our multistep noise form with that polynomial integrated exactly: prediction="noise",
    solver_type="heun" and third_order="exact". Both stop at the chain's first step; below 15 steps its
    lower_order_final lowers the last steps: our "last". The libraries' midpoint form is not it."""
    sched = diffusers.DEISMultistepScheduler(**CHAIN, solver_order=order, lower_order_final=True)
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    ts = torch.cat([grid(sched.timesteps), torch.tensor([1.0 / N], dtype=torch.float64)])
    options = {"order": order, "prediction": "noise", "lower_order_final": "last" if steps < 15 else "none"}
    ours = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, ts, solver_type="heun", third_order="exact", denoise=False,
                                  **options)  # fmt: skip
    # Its third-order coefficients are differences of nearly equal float32 terms: 7e-5 off at 20 steps (the one-step
    # test below shows the formula is ours to 1e-14 in float64).
    torch.testing.assert_close(ours, theirs, **(TOL if order < 3 else {"rtol": 1e-4, "atol": 1e-4}))
    if order > 1:
        midpoint = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, ts, third_order="reference", denoise=False, **options)
        assert float((midpoint - theirs).abs().max()) > 100 * TOL["atol"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # NumPy 2 on its np.log of tensors
@pytest.mark.parametrize("index", [2, 10, 18])
def test_one_deis_third_order_step_is_ours_in_float64(index):
    """One call of its multistep_deis_third_order_update on float64 noise levels and random predictions equals our
    exact third-order noise-form update to 1e-13."""
    from samplers.dpm_solver import dpm_solver_update

    sched = diffusers.DEISMultistepScheduler(**CHAIN, solver_order=3)
    sched.set_timesteps(20)
    sched.sigmas, sched._step_index = sched.sigmas.double(), index  # its sigma is rho = sigma_t / alpha_t
    g = torch.Generator().manual_seed(index)
    preds = [torch.randn(4, 4, generator=g, dtype=torch.float64) for _ in range(3)]  # oldest first
    x = torch.randn(4, 4, generator=g, dtype=torch.float64)
    theirs = sched.multistep_deis_third_order_update(model_output_list=preds, sample=x)
    rho = [float(sched.sigmas[j]) for j in range(index - 2, index + 2)]
    alpha = [1.0 / math.sqrt(1.0 + r * r) for r in rho]
    lam = [math.log(r) for r in rho]  # the noise form's variable: -lambda = log rho
    ours = dpm_solver_update(x, preds, lam, (alpha[2], alpha[3]), rho[3] * alpha[3], 0.0, None, "exact", "heun")
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("steps", [20, 50])
@pytest.mark.parametrize("warmup", ["prk", "plms"])
def test_pndm_equals_pndm_scheduler(warmup, steps):
    """PNDM (Liu et al. 2022) is diffusers' PNDMScheduler: F-PNDM's three pseudo Runge-Kutta steps (its PRK steps,
    the half step at timestep k - N / n / 2, our midpoint in t) then the pseudo linear multistep method, or with
    skip_prk_steps=True the PLMS warm-up (pseudo Heun, then Adams-Bashforth 2 and 3). Its leading timesteps are our
    grid; its last step, to alphas_cumprod[0] with set_alpha_to_one=False, moves nothing, so ours ends at the chain's
    first step without the final denoising."""
    sched = diffusers.PNDMScheduler(**CHAIN, skip_prk_steps=warmup == "plms", set_alpha_to_one=False)
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    stride = N // steps
    ks = sorted({int(k) for k in sched.timesteps if int(k) % stride == 0}, reverse=True)  # its grid, without PRK's
    assert len(ks) == steps and len(sched.timesteps) == steps + (9 if warmup == "prk" else 1)  # half steps
    ours = SAMPLERS["pndm"](score_fn, SDE, x_T, grid(ks), warmup=warmup, denoise=False)
    torch.testing.assert_close(ours, theirs, **TOL)
    ddim = SAMPLERS["ddim"](score_fn, SDE, x_T, grid(ks), denoise=False)
    assert float((ddim - theirs).abs().max()) > 100 * TOL["atol"]


@pytest.mark.parametrize("sde_name, steps", [("vp", 10), ("vp", 25), ("vp", 50)])
def test_ipndm_equals_ipndm_scheduler(sde_name, steps):
    """iPNDM (Zhang & Chen's improved PNDM: DDIM's transfer with the Adams-Bashforth combination of the stored noise
    predictions, orders 1, 2, 3 while they accumulate, no extra calls) is diffusers' IPNDMScheduler. Its
    trained_betas are a variance-preserving path's sigma at the grid's times (its alphas sqrt(1 - sigma^2) are then
    the path's alpha), its model a v-prediction (its ets = x sigma + v alpha is then the noise prediction). Its last
    step, to sigma = 0, moves with the combination, so both stop one step before (ours without the final
    denoising). Its alphas come from sqrt(1 - sigma^2) in float32, which near T keeps few digits: on the DDPM chain
    one coordinate in 1024 is 3e-5 off, and on the cosine chain (sigma_T = 1 - 1e-9) alpha_T rounds to 0."""
    sde = make_sde(sde_name)
    ts = time_grid(sde, steps, 2e-3, "logsnr")
    alpha, sigma = sde.marginal(ts)
    sched = diffusers.IPNDMScheduler(num_train_timesteps=1000, trained_betas=[*sigma.tolist(), 0.0])
    sched.set_timesteps(steps + 1)
    x_T = start() * float(sigma[0])  # the VP prior's scale at ts[0]
    x = x_T.clone()
    for i, k in enumerate(sched.timesteps[:-1]):
        t = torch.full((x.shape[0],), float(ts[i]), dtype=torch.float64)
        eps = -sigma[i] * MIXTURE.score(x.double(), t, sde)
        x = sched.step(((eps - sigma[i] * x.double()) / alpha[i]).float(), k, x).prev_sample
    ours = SAMPLERS["pndm"](lambda z, t: MIXTURE.score(z, t, sde), sde, x_T, ts, warmup="ipndm", denoise=False)
    torch.testing.assert_close(ours, x, **TOL)
    ddim = SAMPLERS["ddim"](lambda z, t: MIXTURE.score(z, t, sde), sde, x_T, ts, denoise=False)
    assert float((ddim - x).abs().max()) > 100 * TOL["atol"]  # DDIM's step without the combination: it can fail


SINGLESTEP_CASES = [(2, False, 10), (2, False, 12), (2, True, 11), (3, True, 10), (3, True, 11), (3, True, 12)]


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("order, lower_order_final, steps", SINGLESTEP_CASES, ids=str)
def test_dpm_solver_fast_equals_dpmsolver_singlestep_scheduler(
    order, lower_order_final, steps, solver_type, prediction
):
    """DPM-Solver-fast (`method="fast"`, Lu et al. 2022a) is diffusers' DPMSolverSinglestepScheduler: its order list
    [1, 2, 3, 1, 2, 3, ..., 1] gives one call per timestep, each window of k calls one singlestep step of order k
    from the window's first timestep, calling at the others (ours on a grid that is not even in lambda). Both stop
    at the chain's first step (final_sigmas_type "sigma_min", ours without the final denoising). Its
    lower_order_final ends an even order-2 budget with two first-order steps, so there the test turns it off.
    Where it differs: at order 3 in the midpoint form diffusers reaches a window's third timestep with its midpoint
    second-order step, where Lu et al.'s DPM-Solver-3 (ours) uses the phi_2 form for both solver types."""
    algorithm = "dpmsolver++" if prediction == "data" else "dpmsolver"
    sched = diffusers.DPMSolverSinglestepScheduler(
        **CHAIN,
        solver_order=order,
        algorithm_type=algorithm,
        solver_type=solver_type,
        lower_order_final=lower_order_final,
        final_sigmas_type="sigma_min",
    )
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    ts = torch.cat([grid(sched.timesteps), torch.tensor([1.0 / N], dtype=torch.float64)])
    options = {"order": order, "prediction": prediction, "solver_type": solver_type, "denoise": False}
    ours = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, ts, method="fast", **options)
    if order == 3 and solver_type == "midpoint":
        assert float((ours - theirs).abs().max()) > 100 * TOL["atol"]
        return
    torch.testing.assert_close(ours, theirs, **TOL)
    fixed = SAMPLERS["dpm_solver"](score_fn, SDE, x_T, ts, **options)  # multistep on the same grid: not the same
    assert float((fixed - theirs).abs().max()) > 100 * TOL["atol"]


@pytest.mark.parametrize("order, steps", [(2, 11), (2, 12), (3, 11), (3, 12)])
def test_dpm_solver_fast_with_the_final_step_to_zero(order, steps):
    """With final_sigmas_type="zero" diffusers' last call is a first-order step to sigma = 0, our final denoising, and
    the calls before it follow the budget's schedule for steps - 1 calls (steps mod 3 = 0 or 2 at order 3)."""
    sched = diffusers.DPMSolverSinglestepScheduler(
        **CHAIN, solver_order=order, solver_type="heun", lower_order_final=True, final_sigmas_type="zero"
    )
    sched.set_timesteps(steps)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    ours = SAMPLERS["dpm_solver"](
        score_fn, SDE, x_T, grid(sched.timesteps), order=order, solver_type="heun", method="fast"
    )
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("order, variant", [(2, "bh1"), (2, "bh2"), (3, "bh1"), (3, "bh2")])
def test_noise_prediction_unipc_equals_predict_x0_false(order, variant):
    """UniPC's noise-prediction form (`prediction="noise"`) is diffusers' predict_x0=False. Its final step to
    sigma = 0 returns NaN in that form, so both stop at the chain's first step (final_sigmas_type "sigma_min", ours
    without the final denoising), where diffusers' lower_order_final lowers the last steps: our "last"."""
    sched = diffusers.UniPCMultistepScheduler(
        **CHAIN,
        solver_order=order,
        solver_type=variant,
        lower_order_final=True,
        final_sigmas_type="sigma_min",
        predict_x0=False,
    )
    sched.set_timesteps(20)
    x_T = start()
    theirs = run_diffusers(sched, x_T)
    ts = torch.cat([grid(sched.timesteps), torch.tensor([1.0 / N], dtype=torch.float64)])
    options = {"order": order, "variant": variant, "lower_order_final": "last", "denoise": False}
    ours = SAMPLERS["unipc"](score_fn, SDE, x_T, ts, prediction="noise", **options)
    torch.testing.assert_close(ours, theirs, **TOL)
    data_form = SAMPLERS["unipc"](score_fn, SDE, x_T, ts, **options)
    assert float((data_form - theirs).abs().max()) > 100 * TOL["atol"]  # a different method: the test can fail


def model_level(sched) -> float:
    """The noise level at which diffusers' two-call (k-diffusion style) schedulers call the model this step."""
    i, first = sched.step_index, sched.state_in_first_order
    if isinstance(sched, diffusers.KDPM2DiscreteScheduler):
        return float(sched.sigmas[i] if first else sched.sigmas_interpol[i])
    if isinstance(sched, diffusers.KDPM2AncestralDiscreteScheduler):
        return float(sched.sigmas[i] if first else sched.sigmas_interpol[i - 1])
    return float(sched.sigmas[i] if first else sched.mid_point_sigma)  # DPMSolverSDEScheduler


class ReplayedBrownianNoise:
    """DPMSolverSDEScheduler's noise sampler, answering its two calls per step, (sigma, sigma_mid) then (sigma,
    sigma_next), as its Brownian tree does (the second increment contains the first), from two draws per step of a
    seeded generator: the draws our method="sde" makes, so the same Brownian path drives both."""

    def __init__(self, shape, seed: int):
        self.shape, self.g, self.step = shape, torch.Generator().manual_seed(seed), None

    def __call__(self, sigma, sigma_next):
        sigma, sigma_next = float(sigma), float(sigma_next)
        if self.step is None:
            self.step = (
                sigma,
                sigma_next,
                torch.randn(self.shape, generator=self.g),
                torch.randn(self.shape, generator=self.g),
            )
            return self.step[2]
        start, mid, z1, z2 = self.step
        self.step = None
        d1, d2 = start - mid, mid - sigma_next
        return (d1**0.5 * z1 + d2**0.5 * z2) / (d1 + d2) ** 0.5


def run_two_call_scheduler(sched, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffusers' loop for KDPM2Discrete, KDPM2AncestralDiscrete and DPMSolverSDE (two model calls per step, the last
    step to sigma = 0 a first-order one): x_T (x-space of the chain's first time), their samples, their levels."""
    sched.set_timesteps(steps)
    x_T = start()
    x = x_T * sched.init_noise_sigma
    if isinstance(sched, diffusers.DPMSolverSDEScheduler):
        sched.noise_sampler = ReplayedBrownianNoise(x.shape, seed)
    kwargs = (
        {"generator": torch.Generator().manual_seed(seed)}
        if "generator" in inspect.signature(sched.step).parameters
        else {}
    )
    for k in sched.timesteps:
        x_in = sched.scale_model_input(x, k)
        x = sched.step(level_eps(x_in, model_level(sched)), k, x, **kwargs).prev_sample
    levels = torch.unique_consecutive(sched.sigmas.double())[:-1]
    return x_T * sched.init_noise_sigma / (1 + levels[0] ** 2).sqrt().float(), x, levels


@pytest.mark.parametrize(
    "name, options",
    [
        ("KDPM2DiscreteScheduler", {"method": "singlestep", "prediction": "noise"}),  # DPM-Solver-2
        ("KDPM2AncestralDiscreteScheduler", {"method": "singlestep", "prediction": "noise", "eta": 1.0}),
        ("DPMSolverSDEScheduler", {"method": "sde", "eta": 1.0}),
    ],
)
@pytest.mark.parametrize("steps", [6, 12])
def test_two_call_schedulers_equal_singlestep_dpm_solver(name, options, steps):
    """diffusers' KDPM2 schedulers and its DPMSolverSDEScheduler (k-diffusion's sample_dpm_2, sample_dpm_2_ancestral
    and sample_dpmpp_sde, eps prediction on the chain's interpolated sigmas) are our singlestep DPM-Solver-2 in the
    noise form, its ancestral form at eta = 1, and method="sde" at eta = 1 (their only eta), on their levels; their
    first-order last step to sigma = 0 is our final denoising. Same x_T, same noise (DPMSolverSDE's Brownian tree
    replayed from our draws)."""
    if name == "DPMSolverSDEScheduler":
        pytest.importorskip("torchsde", reason="diffusers' DPMSolverSDEScheduler needs torchsde (the compat extra)")
    sched = getattr(diffusers, name)(**CHAIN)
    x_T, theirs, levels = run_two_call_scheduler(sched, steps, seed=5)
    ts = SDE.t_from_logsnr(-torch.log(levels))
    ours = SAMPLERS["dpm_solver"](
        score_fn, SDE, x_T, ts, order=2, generator=torch.Generator().manual_seed(5), **options
    )
    torch.testing.assert_close(ours, theirs, **TOL)


# ---- RePaint (samplers/repaint.py) against RePaintScheduler. ---------------------------------------------------------
def run_repaint_scheduler(sched, x_T, x_known, mask, eps_fn, seed):
    """diffusers' RePaintPipeline loop: a step where the timestep falls, undo_step where it rises."""
    g = torch.Generator().manual_seed(seed)
    x, t_last = x_T.clone(), sched.timesteps[0] + 1
    for t in sched.timesteps:
        if t < t_last:
            x = sched.step(eps_fn(x, t), t, x, x_known, mask, generator=g).prev_sample
        else:
            x = sched.undo_step(x, t_last, generator=g)
        t_last = t
    return x


def repaint_scheduler_walk(sched, n):
    """diffusers' timesteps as our levels: the image sits at level k before the step at timestep k, and at k - 1
    after it or after the undo_step that leads to timestep k."""
    return [n - 1] + [int(k) - 1 for k in sched.timesteps]


@pytest.mark.parametrize("eta, jump_length, jump_n_sample", [(1.0, 5, 3), (0.0, 5, 3), (0.5, 10, 4)])
def test_repaint_equals_repaint_scheduler(eta, jump_length, jump_n_sample):
    """RePaint with replace="after" (the paper's Alg. 1: one noise draw per step serving the known part at the new
    level and the unknown part's DDIM-eta step) on diffusers' walk is its RePaintScheduler, no clipping, when its
    inference steps are its training steps (a 50-step chain = our "ddpm" path at N = 50; undo_step then takes one
    beta, our forward kernel)."""
    n = 50
    sde = make_sde("ddpm", N=n)

    def chain_eps(x, k):
        t = torch.full((x.shape[0],), (int(k) + 1) / n, dtype=torch.float64)
        return (-sde.marginal(t)[1][:, None] * MIXTURE.score(x.double(), t, sde)).float()

    sched = diffusers.RePaintScheduler(
        num_train_timesteps=n, trained_betas=sde.betas.float().numpy(), eta=eta, clip_sample=False
    )
    sched.set_timesteps(n, jump_length=jump_length, jump_n_sample=jump_n_sample)
    x_T, x_known = start(), start(seed=1)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    theirs = run_repaint_scheduler(sched, x_T, x_known, mask, chain_eps, seed=5)
    ts = torch.tensor([(k + 1) / n for k in range(n - 1, -1, -1)], dtype=torch.float64)
    ours = repaint_sample(
        lambda x, t: MIXTURE.score(x, t, sde),
        sde,
        x_T,
        ts,
        x_known,
        mask,
        eta=eta,
        levels=repaint_scheduler_walk(sched, n),
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(ours, theirs, **TOL)


def test_repaint_scheduler_walk_is_the_authors_one_level_lower():
    """diffusers jumps right after the step at timestep j, from level j - 1, where the authors' get_schedule_jump
    (our default) jumps on reaching level j: its walk is theirs shifted down one level (its first jump leaves from
    the data itself)."""
    sched = diffusers.RePaintScheduler(num_train_timesteps=50)
    sched.set_timesteps(50, jump_length=5, jump_n_sample=3)
    theirs, ours = repaint_scheduler_walk(sched, 50), repaint_levels(50, 5, 3)
    assert theirs == [49] + [level - 1 for level in ours[:-1]]
    assert theirs[10:12] == [39, 40] and ours[9:11] == [40, 41]  # the first jumps
    assert -1 in theirs[1:-1] and -1 not in ours[1:-1]  # only diffusers' walk jumps from the data


def test_repaint_scheduler_undo_lands_too_high_when_it_skips_timesteps():
    """With n = num_train_timesteps // num_inference_steps > 1, undo_step(x, t) applies betas t .. t + n - 1 to an
    image at level t - n, which needs betas t - n + 1 .. t: it lands n - 1 chain steps too high. From the data
    (t = 0, n = 4) that is 1 - abar_3 instead of 1 - abar_0, 4.x times the noise variance (measured on 20,000
    draws; the gap shrinks with the level)."""
    sched = diffusers.RePaintScheduler(num_train_timesteps=1000)
    sched.set_timesteps(250, jump_length=10, jump_n_sample=10)
    x = torch.zeros(20000)
    var = sched.undo_step(x, 0, generator=torch.Generator().manual_seed(0)).var().item()
    abar = sched.alphas_cumprod.double()
    assert abs(var / (1 - abar[3].item()) - 1) < 0.05
    assert var / (1 - abar[0].item()) > 3.5


# ---- SA-Solver (samplers/sa_solver.py) against SASolverScheduler. ----------------------------------------------------
def sa_window() -> dict:
    """diffusers' default tau window (timesteps 200..800) as our noise levels, a hair wider for float rounding."""
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, N, dtype=torch.float64), 0)
    level = lambda k: float(((1 - abar[k]) / abar[k]).sqrt())  # noqa: E731
    return {"tau_sigma_min": level(200) * (1 - 1e-9), "tau_sigma_max": level(800) * (1 + 1e-9)}


def run_sa_scheduler(p, c, steps, tau, algorithm, float64=False):
    sched = diffusers.SASolverScheduler(**CHAIN, predictor_order=p, corrector_order=c, algorithm_type=algorithm,
                                        tau_func=(lambda t: 0) if tau == 0 else None)  # fmt: skip
    sched.set_timesteps(steps)
    x, g = start(), torch.Generator().manual_seed(3)
    if float64:  # its chain in float64: its sigmas are all it reads
        abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, N, dtype=torch.float64), 0)
        sched.sigmas = ((1 - abar) / abar).sqrt()[sched.timesteps.tolist() + [0]]
        x = x.double()
    x_T = x.clone()
    for k in sched.timesteps:
        t = torch.full((x.shape[0],), (int(k) + 1) / N, dtype=torch.float64)
        model = -SDE.marginal(t)[1][:, None] * MIXTURE.score(x.double(), t, SDE)
        x = sched.step(model.to(x.dtype), k, x, generator=g).prev_sample
    ts = torch.cat([grid(sched.timesteps), torch.tensor([1 / N], dtype=torch.float64)])
    return x_T, x, ts


def our_sa(x_T, ts, p, c, tau, prediction):
    return SAMPLERS["sa_solver"](score_fn, SDE, x_T, ts, predictor_order=p, corrector_order=c, tau=tau,
                                 prediction=prediction, lower_order_final="last", tau_at="start", denoise=False,
                                 generator=torch.Generator().manual_seed(3), **sa_window())  # fmt: skip


SA_CASES = [(1, 1, 20, 0.0), (2, 2, 20, 0.0), (2, 2, 20, 1.0), (2, 1, 15, 1.0), (3, 4, 20, 1.0), (4, 4, 25, 1.0)]


@pytest.mark.parametrize("p, c, steps, tau", SA_CASES)
def test_sa_solver_equals_sa_solver_scheduler(p, c, steps, tau):
    """Data prediction (its default), float32 as it runs: its default tau window, decided at each step's start
    (tau_at="start"), its lower_order_final, its few-step order-2 rescaling; its last step lands on timestep 0's
    level (our denoise=False). Orders 3-4 agree to 1e-4 (its Lagrange weights are expanded in powers of lambda in
    float32)."""
    x_T, theirs, ts = run_sa_scheduler(p, c, steps, tau, "data_prediction")
    ours = our_sa(x_T, ts, p, c, tau, "data")
    torch.testing.assert_close(ours, theirs, **(TOL if p <= 2 else {"rtol": 1e-4, "atol": 2e-4}))


@pytest.mark.parametrize("p, c, steps, tau", [(2, 2, 20, 1.0), (3, 4, 20, 1.0), (4, 4, 25, 1.0)])
def test_sa_solver_noise_form_equals_its_float64_run_where_its_float32_one_drifts(p, c, steps, tau):
    """The noise-prediction form equals SASolverScheduler run on its chain in float64 (1e-8). In float32 its
    weights, polynomials in lambda ~ -10..6 times e^{-lambda}, cancel: at orders 3-4 its own float32 run is 1e-3 to
    0.6 away from its float64 one, ours (float64 weights) within 1e-4."""
    x_T, theirs64, ts = run_sa_scheduler(p, c, steps, tau, "noise_prediction", float64=True)
    torch.testing.assert_close(our_sa(x_T.double(), ts, p, c, tau, "noise"), theirs64, rtol=1e-8, atol=1e-8)
    _, theirs32, _ = run_sa_scheduler(p, c, steps, tau, "noise_prediction")
    ours32 = our_sa(x_T, ts, p, c, tau, "noise")
    assert (ours32.double() - theirs64).abs().max() < 1e-4
    if p >= 3:
        assert (theirs32.double() - theirs64).abs().max() > 1e-3


def test_rescaled_guidance_equals_diffusers_rescale_noise_cfg():
    """diffusers' `rescale_noise_cfg` (its CFG guider's and pipelines' guidance_rescale) works on the noise
    prediction eps = -sigma score; ours on the score. Per example the factor -sigma cancels in the ratio of standard
    deviations, so the two agree, image-shaped and with a different sigma for each example."""
    guider_utils = pytest.importorskip("diffusers.guiders.guider_utils", reason="this diffusers has no guiders")
    from models.guidance import rescale_guided

    g = torch.Generator().manual_seed(0)
    score_cond = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    score_uncond = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    sigma = torch.rand(6, 1, 1, 1, generator=g, dtype=torch.float64) + 0.1
    guided = 5 * score_cond - 4 * score_uncond
    for phi in (0.0, 0.5, 0.7, 1.0):
        theirs = guider_utils.rescale_noise_cfg(-sigma * guided, -sigma * score_cond, guidance_rescale=phi)
        torch.testing.assert_close(-sigma * rescale_guided(guided, score_cond, phi), theirs, rtol=1e-12, atol=1e-12)
