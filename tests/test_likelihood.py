"""Probability-flow ODE likelihood, Hutchinson divergence and bits/dim against exact answers; the bits/dim driver.

The oracle is data.toy.GaussianMixture: with its exact score the probability-flow ODE transports p_{t_min} to p_T
exactly, so log p_{t_min}(x) = log p_T(z) + int div. The solver returns log prior(z) + int div; replacing the prior
by the exact log p_T(z) isolates the ODE's own error (the prior mismatch p_T != N(0, prior_std^2) is not an error
of the solver: it is what every score model's likelihood carries, e.g. ~1e-3 nats per dimension for VP).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from data.toy import GaussianMixture, make_mixture
from likelihood import (
    bits_per_dim,
    check_pixels,
    draw_probes,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
    log_likelihood_per_probe,
)
from sde import EDMSDE, VESDE, VPSDE, CosineVPSDE, DiscreteVPSDE, RectifiedFlow, SubVPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE(), EDMSDE(), RectifiedFlow()]


def two_component_mixture() -> GaussianMixture:
    """A 2-component mixture of correlated Gaussians in 3-D."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 3, generator=g, dtype=torch.float64) / 2
    covs = a @ a.transpose(1, 2) + 0.05 * torch.eye(3, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[-0.6, 0.2, 0.1], [0.7, -0.3, 0.4]]), covs)


def image_gaussian() -> GaussianMixture:
    """A correlated Gaussian over image-shaped events (1, 4, 4)."""
    base = make_mixture("gaussian", 16, seed=2)
    return GaussianMixture(base.weights, base.means, base.covs, shape=(1, 4, 4))


TARGETS = {
    "gaussian": lambda: make_mixture("gaussian", 3, seed=1),
    "mixture": two_component_mixture,
    "image": image_gaussian,
}


# ---- The ODE against closed-form log-densities. ----------------------------------------------------------------------
CASES = [(sde, target) for sde in SDES for target in sorted(TARGETS)]


@pytest.mark.parametrize("sde, target", CASES, ids=lambda c: getattr(c, "name", c))
def test_ode_matches_exact_log_density(sde, target):
    """Exact divergence: log p_{t_min}(x) to 1e-3 bits/dim (the solver's own error at rtol = atol = 1e-5 is
    ~1e-4 nats in total; there is no Monte-Carlo noise)."""
    mix = TARGETS[target]()
    x = mix.sample(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    logp, z, nfe = log_likelihood(mix.score_fn(sde), sde, x, divergence="exact")
    solver_logp = logp - sde.prior_logp(z) + mix.log_prob(z, sde.T, sde)  # exact p_T instead of the prior
    exact = mix.log_prob(x, 1e-5, sde)
    err_bpd = (solver_logp - exact).abs() / (mix.dim * math.log(2))
    assert err_bpd.max() < 1e-3, (err_bpd, nfe)
    assert z.shape == x.shape and 10 < nfe < 1000


def test_hutchinson_ode_is_unbiased():
    """Rademacher probes held fixed along the ODE: every probe's log p is an unbiased estimate, so the mean of the
    16 x 8 (example, probe) errors lies within 4 standard errors (their std / sqrt(128)) plus the solver's own
    error at rtol = atol = 1e-3 (4e-3 nats with the exact divergence; 0.01 allowed) of zero."""
    sde, mix = VPSDE(), make_mixture("gaussian", 4, seed=4)
    x = mix.sample(16, torch.Generator().manual_seed(1), dtype=torch.float64)
    logp, z, _ = log_likelihood_per_probe(
        mix.score_fn(sde), sde, x, num_probes=8, rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(2)
    )
    solver_logp = logp - sde.prior_logp(z)[:, None] + mix.log_prob(z, sde.T, sde)[:, None]  # [B, K]
    err = solver_logp - mix.log_prob(x, 1e-5, sde)[:, None]
    stderr = err.std() / math.sqrt(err.numel())
    assert stderr > 0.01  # the Jacobian is not diagonal: single probes do scatter
    assert err.mean().abs() < 4 * stderr + 0.01, (err.mean(), stderr)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_divergence_unbiased_on_correlated_gaussian(probe):
    """On a correlated Gaussian's probability-flow drift: the mean over 4000 probes is within 4 s.e. of the exact
    divergence, and the spread matches Hutchinson's variance 2 sum_{i != j} S_ij^2 (+ 2 sum_i J_ii^2 for Gaussian
    probes), S = (J + J^T)/2, to 10% (the relative s.e. of a sample variance of 4000 draws is ~3-5%)."""
    sde, mix = VPSDE(), make_mixture("gaussian", 5, seed=5)
    x = mix.sample(1, torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    t = torch.full((1,), 0.3, dtype=torch.float64)
    drift = sde.reverse(x, t, mix.score(x, t, sde), probability_flow=True)[0]
    exact = exact_divergence(drift, x)[0, 0]
    probes = draw_probes(probe, x.shape, 4000, torch.Generator().manual_seed(1), dtype=torch.float64)
    est = hutchinson_divergence(drift, x, probes)[0]  # [K]
    jac = torch.autograd.functional.jacobian(lambda v: sde.reverse(v, t, mix.score(v, t, sde), True)[0], x)[0, :, 0]
    sym = (jac + jac.T) / 2
    var = 2 * (sym**2).sum() - 2 * (torch.diagonal(sym) ** 2).sum()
    if probe == "gaussian":
        var = var + 2 * (torch.diagonal(jac) ** 2).sum()
    assert var > 0.05 * exact.abs()  # a correlated target: the estimator has real variance
    assert abs(est.mean() - exact) < 4 * math.sqrt(var / est.numel())
    assert abs(est.var() / var - 1) < 0.1
    assert torch.allclose(torch.trace(jac), exact)


def test_solver_never_leaves_t_min_to_T():
    """A counting score_fn: the NFE is the number of calls and every call has t_min <= t <= T (dopri5 would
    overshoot T without the forced last step)."""
    sde, mix = VPSDE(), make_mixture("gaussian", 3)
    x = mix.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []

    def score_fn(x, t):
        calls.append(t.detach().clone())
        return mix.score(x, t, sde)

    for method, time_variable, options in [
        ("dopri5", "t", None),
        ("dopri5", "logsnr", None),
        ("rk4", "t", {"step_size": 0.1}),
    ]:
        calls.clear()
        _, _, nfe = log_likelihood(
            score_fn,
            sde,
            x,
            t_min=1e-3,
            rtol=1e-3,
            atol=1e-3,
            method=method,
            time_variable=time_variable,
            options=options,
            generator=torch.Generator().manual_seed(0),
        )
        times = torch.cat(calls)
        assert nfe == len(calls) and times.min() >= 1e-3 and times.max() <= sde.T, (method, times.min(), times.max())


@pytest.mark.parametrize("method, unread", [("dopri5", 1), ("dopri8", 4)])
@pytest.mark.parametrize("divergence, time_variable", [("hutchinson", "t"), ("exact", "logsnr")])
def test_unread_stages_skip_the_divergence_without_changing_a_bit(
    monkeypatch, method, unread, divergence, time_variable
):
    """dopri5's stage 2 (c = 1/5) and dopri8's stages 2-5 have weight 0 in the solution, the error estimate and
    the dense output, so their divergence is never read: each step attempt spends `unread` plain forwards there
    instead of forwards with graph + VJP, and log p and z are bitwise those of the run that computes them all."""
    import likelihood.ode as ode

    sde, mix = VPSDE(), make_mixture("gaussian", 3, seed=1)
    x = mix.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = {True: [], False: []}

    def score_fn(x, t):
        calls[torch.is_grad_enabled() and x.requires_grad].append(float(t[0]))
        return mix.score(x, t, sde)

    def solve():
        for v in calls.values():
            v.clear()
        kwargs = dict(rtol=1e-6, atol=1e-6, method=method, divergence=divergence, time_variable=time_variable)
        return log_likelihood(score_fn, sde, x, generator=torch.Generator().manual_seed(0), **kwargs), dict(calls)

    assert len(ode.unread_stages(method)) == unread  # pins torchdiffeq's tableau (else nothing is skipped)
    (logp, z, nfe), skipped = solve()
    skipped = {k: list(v) for k, v in skipped.items()}
    monkeypatch.setattr(ode, "unread_stages", lambda method: {})
    (logp_all, z_all, nfe_all), every = solve()
    assert torch.equal(logp, logp_all) and torch.equal(z, z_all) and nfe == nfe_all
    assert len(every[False]) == 0 and len(every[True]) == nfe
    stages = {"dopri5": 6, "dopri8": 13}[method]  # calls per step attempt (first same as last)
    attempts = (nfe - 2) // stages  # two initial calls (f(t_min) and the first-step estimate), then whole steps
    assert nfe == 2 + attempts * stages and attempts > 3
    assert len(skipped[False]) == unread * attempts and len(skipped[True]) == nfe - unread * attempts


@pytest.mark.parametrize("time_variable, max_err", [("logsnr", 1e-4), ("t", 1e-2)])
def test_discrete_vp_chain_needs_logsnr_time(time_variable, max_err):
    """DDPM's chain with N = 50 (piecewise-constant beta): integrating in log-SNR gives the exact log-density
    (error ~5e-5 nats), integrating in t does not (~3e-2 nats: dopri5 steps across the jumps of beta). The
    second case pins the reason "auto" picks log-SNR for the chain; it fails if that stops being true."""
    sde, mix = DiscreteVPSDE(N=50), make_mixture("gaussian", 2, seed=6)
    x = mix.sample(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    logp, z, _ = log_likelihood(mix.score_fn(sde), sde, x, t_min=1e-3, divergence="exact", time_variable=time_variable)
    err = (logp - sde.prior_logp(z) + mix.log_prob(z, sde.T, sde) - mix.log_prob(x, 1e-3, sde)).abs().max()
    assert (err < max_err) if time_variable == "logsnr" else (err > 1e-3)


@pytest.mark.parametrize(
    "sde",
    [VPSDE(), SubVPSDE(), VESDE(), DiscreteVPSDE(N=40), CosineVPSDE(N=40), EDMSDE(), RectifiedFlow()],
    ids=lambda s: s.name,
)
def test_logsnr_time_derivative(sde):
    """d log SNR/dt = -g^2 / sigma^2 (used for dt/du) against a central finite difference, off the chain's jumps."""
    t = torch.tensor([0.113, 0.517, 0.871], dtype=torch.float64)
    h = 1e-6
    fd = (sde.snr(t + h).log() - sde.snr(t - h).log()) / (2 * h)
    _, g = sde.sde(torch.zeros(3, 1, dtype=torch.float64), t)
    torch.testing.assert_close(fd, -(g**2) / sde.marginal(t)[1] ** 2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rtol": 0.0}, "rtol"),
        ({"atol": -1e-5}, "atol"),
        ({"rtol": float("nan")}, "rtol"),
        ({"t_min": 0.0}, "t_min"),
        ({"t_min": 1.0}, "t_min"),
        ({"t_min": 1.5}, "t_min"),
        ({"divergence": "skilling"}, "divergence"),
        ({"probe": "sphere"}, "probe"),
        ({"method": "leapfrog"}, "method"),
        ({"num_probes": 0}, "num_probes"),
        ({"time_variable": "sigma"}, "time variable"),
        ({"method": "exponential", "options": {"order": 6}}, "order"),
        ({"method": "exponential", "options": {"order": True}}, "order"),
        ({"method": "exponential", "options": {"steps": 10}}, "unknown options"),
        ({"method": "exponential", "options": {"first_step": 0.0}}, "first_step"),
        ({"method": "exponential", "options": {"max_calls": 1}}, "max_calls"),
        ({"state_dtype": "float16"}, "state dtype"),
        ({"method": "exponential", "time_variable": "sigma"}, "time variable"),
    ],
)
def test_bad_options_raise_before_any_work(kwargs, match):
    def score_fn(x, t):
        raise AssertionError("the score must not be evaluated for bad options")

    with pytest.raises(ValueError, match=match):
        log_likelihood(score_fn, VPSDE(), torch.zeros(2, 3), **kwargs)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.tensor([[0.0, float("nan"), 1.0]]), "1 non-finite values"),
        (torch.tensor([[0.0, float("inf")], [1.0, -float("inf")]]), "2 non-finite values"),
        (torch.zeros(3), r"batch \[B, \*D\] with B >= 1, got a torch.float32 tensor of shape \[3\]"),
        (torch.zeros(2, 3, dtype=torch.long), "torch.int64"),
        (torch.zeros(0, 3), "shape \\[0, 3\\]"),
    ],
)
def test_bad_data_raise_before_any_work(x, match):
    """NaN data used to surface as torchdiffeq's 'underflow in dt' after the first steps."""

    def score_fn(x, t):
        raise AssertionError("the score must not be evaluated for bad data")

    for method in ("dopri5", "exponential"):
        with pytest.raises(ValueError, match=match):
            log_likelihood(score_fn, VPSDE(), x, method=method)


# ---- Bits per dimension. ---------------------------------------------------------------------------------------------
def test_uniform_density_is_eight_bits_per_dim():
    """The uniform density on the data cube: p = 2^-D on [-1, 1]^D (scale 2/256) or 1 on [0, 1]^D (scale 1/256)."""
    for d in (1, 784):
        logp = torch.tensor(-d * math.log(2), dtype=torch.float64)
        assert bits_per_dim(logp, d).item() == pytest.approx(8, abs=1e-12)
        assert bits_per_dim(0.0, d, scale=1 / 256) == pytest.approx(8, abs=1e-12)
        nll = 1234.5  # any NLL in [-1, 1) model space: nll / (D ln 2) + 7 (data/datasets.py's docstring)
        assert bits_per_dim(-nll, d) == pytest.approx(nll / (d * math.log(2)) + 7, abs=1e-12)


def test_dequantised_bits_bound_the_discrete_probability():
    """For a smooth density, E_u[bits/dim] >= -log2 P(pixel), with the Jensen gap ~ Var_u(log p)/2 nats (asserted
    below twice that); P(pixel) = CDF difference over the pixel's bin [2k/256 - 1, 2(k+1)/256 - 1]."""
    normal = torch.distributions.Normal(torch.tensor(0.1, dtype=torch.float64), 0.4)
    u = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000  # midpoint rule over the bin, error ~1e-7
    for k in (3, 100, 128, 200):
        y = 2 * (k + u) / 256 - 1
        bpd = bits_per_dim(normal.log_prob(y), 1).mean().item()
        jensen = normal.log_prob(y).var().item() / math.log(2)  # twice the leading-order gap, in bits
        prob = (normal.cdf(torch.tensor(2 * (k + 1) / 256 - 1)) - normal.cdf(torch.tensor(2 * k / 256 - 1))).item()
        exact = -math.log2(prob)
        assert 0 <= bpd - exact < jensen, (k, bpd, exact, jensen)


@pytest.mark.parametrize("bad", [torch.tensor([0.5, 1.0]), torch.tensor([0, 256]), torch.tensor([-1, 3])])
def test_pixels_outside_range_raise(bad):
    with pytest.raises(ValueError, match="pixels"):
        check_pixels(bad)
    assert check_pixels(torch.tensor([0, 255])).dtype == torch.uint8


# ---- The driver. -----------------------------------------------------------------------------------------------------
def isotropic_score(sde, std=0.5):
    """Exact score of data N(0, std^2 I) under the SDE (a cheap oracle for image-sized tests)."""

    def score_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return -x / (alpha**2 * std**2 + sigma**2).reshape(-1, *[1] * (x.ndim - 1))

    return score_fn


def test_evaluate_bpd_resumes_after_a_kill(tmp_path):
    """Kill the evaluation in its second chunk; the restart skips the finished chunk and ends with exactly the
    numbers of an uninterrupted run."""
    from evaluation.likelihood_eval import evaluate_bpd

    sde = VPSDE()
    images = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    opts = dict(batch_size=2, num_dequant=2, num_probes=2, rtol=1e-3, atol=1e-3, bound_steps=20)
    reference = evaluate_bpd(isotropic_score(sde), sde, images, out_dir=tmp_path / "ref", **opts)
    calls, fail_after = [0], [0]

    def flaky(x, t):
        calls[0] += 1
        if fail_after[0] and calls[0] > fail_after[0]:
            raise KeyboardInterrupt("killed")
        return isotropic_score(sde)(x, t)

    evaluate_bpd(flaky, sde, images[:2], out_dir=tmp_path / "count", **opts)
    per_chunk, calls[0] = calls[0], 0
    fail_after[0] = per_chunk + 5  # die inside the second chunk
    with pytest.raises(KeyboardInterrupt):
        evaluate_bpd(flaky, sde, images, out_dir=tmp_path / "run", **opts)
    assert len(list((tmp_path / "run" / "likelihood_chunks").glob("chunk_*.npz"))) == 1
    first = tmp_path / "run" / "likelihood_chunks" / "chunk_00000.npz"
    first_id = (first.stat().st_ino, first.stat().st_mtime_ns)
    calls[0], fail_after[0] = 0, 0
    resumed = evaluate_bpd(flaky, sde, images, out_dir=tmp_path / "run", **opts)
    assert first.stat().st_ino == first_id[0] and first.stat().st_mtime_ns == first_id[1]  # not recomputed
    for key, value in reference["per_image"].items():
        np.testing.assert_array_equal(resumed["per_image"][key], value)
    assert resumed["ode_bpd"] == reference["ode_bpd"] and resumed["bound_bpd_total"] == reference["bound_bpd_total"]
    assert reference["per_image"]["ode_bpd_samples"].shape == (5, 2, 2)
    # Changed settings invalidate the stored chunks instead of silently reusing them.
    other = evaluate_bpd(isotropic_score(sde), sde, images, out_dir=tmp_path / "run", **{**opts, "num_probes": 1})
    assert other["per_image"]["ode_bpd_samples"].shape == (5, 2, 1)


def test_evaluate_bpd_matches_exact_discrete_likelihood():
    """Pixels whose model density is N(0, 0.5^2) per dimension in [-1, 1]: the dequantised ODE bits/dim is within
    0.01 bits/dim (+ 4 probe s.e.) of the exact discrete -log2 P(pixels) / D of that model (Jensen gap ~1e-5, prior
    mismatch ~1e-3, solver ~1e-4), and the bound lies above it (within 4 s.e.)."""
    from evaluation.likelihood_eval import evaluate_bpd

    sde = VPSDE()
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 0.5)
    x = (0.5 * torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))).clamp(-0.999, 0.999)
    images = torch.floor((x + 1) * 128).to(torch.uint8)
    k = images.double()
    log_prob = torch.log(normal.cdf(2 * (k + 1) / 256 - 1) - normal.cdf(2 * k / 256 - 1)).flatten(1).sum(1)
    exact_bpd = (-log_prob / (16 * math.log(2))).mean().item()
    res = evaluate_bpd(
        isotropic_score(sde), sde, images, num_dequant=2, num_probes=4, rtol=1e-4, atol=1e-4, bound_steps=200
    )
    assert abs(res["ode_bpd"] - exact_bpd) < 0.01 + 4 * res["ode_bpd_probe_stderr"], (res["ode_bpd"], exact_bpd)
    assert res["bound_bpd_total"] > exact_bpd - 4 * res["bound_bpd_total_stderr"]
    assert res["bound_bpd_total"] == pytest.approx(
        res["bound_bpd_prior"] + res["bound_bpd_diffusion"] + res["bound_bpd_decoder"]
    )


def test_run_likelihood_eval_end_to_end(tmp_path):
    """A tiny U-Net checkpoint saved with training.checkpoint, tiny MNIST test IDX files: JSON, per-image npz and
    tensorboard are written; a second call resumes from the stored chunks and returns the same numbers."""
    pytest.importorskip("infra.checkpoint")
    from compose.build import make_score_model
    from configs.default import get_default_config
    from evaluation.likelihood_eval import run_likelihood_eval
    from infra.checkpoint import save_checkpoint

    cfg = get_default_config()
    cfg.model.base_channels, cfg.model.channel_mult, cfg.model.attn_resolutions = 8, (1,), ()
    cfg.model.num_res_blocks, cfg.model.dropout = 1, 0.0
    net_state = make_score_model(cfg).net.state_dict()
    save_checkpoint(tmp_path, 1, {"config": json.dumps(cfg.to_dict()), "model": net_state, "ema": net_state, "step": 1})
    write_idx(tmp_path / "mnist", n=3)
    cfg.data.root, cfg.eval.num_images, cfg.eval.batch_size = str(tmp_path / "mnist"), 3, 2
    cfg.eval.method, cfg.eval.bound_steps = "euler", 4  # one network evaluation per ODE solve: plumbing only
    out = run_likelihood_eval(cfg, str(tmp_path))
    stored = json.loads((tmp_path / "eval" / "likelihood.json").read_text())
    assert stored["ode_bpd"] == out["ode_bpd"] and math.isfinite(out["ode_bpd"]) and out["num_dims"] == 784
    # One probe and one draw: no probe standard error; strict JSON says null and why.
    text = (tmp_path / "eval" / "likelihood.json").read_text()
    assert "NaN" not in text and stored["ode_bpd_probe_stderr"] is None
    assert "num_probes" in stored["ode_bpd_probe_stderr_reason"]
    with np.load(tmp_path / "eval" / "per_image.npz") as per_image:
        assert per_image["ode_bpd"].shape == (3,) and per_image["bound_total"].shape == (3,)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert run_likelihood_eval(cfg, str(tmp_path))["ode_bpd"] == out["ode_bpd"]
    cfg.eval.bound_variance = "beta-tilde"
    with pytest.raises(ValueError, match="bound variance"):
        run_likelihood_eval(cfg, str(tmp_path))


def write_idx(folder, n: int) -> None:
    """Tiny MNIST test-split IDX files (random digits) in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    for name, arr, magic in (("t10k-images-idx3-ubyte", images, 0x803), ("t10k-labels-idx1-ubyte", labels, 0x801)):
        header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / name).write_bytes(header + arr.tobytes())
