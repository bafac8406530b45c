"""Guidance against the labelled Gaussian-mixture oracle: exact identities of the guided scores, guided samplers
within Monte-Carlo tolerances, inpainting, clear errors, and the classifier / evaluation-net trainers end to end."""

import math

import pytest
import torch
from torch import nn

from data.toy import GaussianMixture, make_mixture
from models import ScoreModel
from models.guidance import (
    cfg_score_fn,
    check_same_sde,
    classifier_log_probs,
    classifier_score_fn,
    inpaint,
    inpaint_projection,
)
from samplers import SAMPLERS, run_sampler, time_grid
from sde import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=10.0), DiscreteVPSDE(N=1000)]


def labelled_mixture() -> GaussianMixture:
    """4 components in 2-D, 2 classes: class 0 = left pair (prior 0.6), class 1 = right pair (prior 0.4)."""
    means = torch.tensor([[-2.0, -1.0], [-1.0, 1.5], [2.0, -1.0], [1.0, 1.5]])
    return GaussianMixture(
        torch.tensor([0.4, 0.2, 0.15, 0.25]),
        means,
        torch.tensor([0.4, 0.5, 0.3, 0.45]),
        labels=torch.tensor([0, 0, 1, 1]),
    )


def time_from_noise_label(sde, noise_label: torch.Tensor) -> torch.Tensor:
    """Invert noise_label = log(sigma_t / alpha_t), increasing in t, by bisection (float64, 60 halvings)."""
    lo, hi = torch.zeros_like(noise_label, dtype=torch.float64), torch.ones_like(noise_label, dtype=torch.float64)
    for _ in range(60):
        mid = (lo + hi) / 2
        alpha, sigma = sde.marginal(mid)
        below = torch.log(sigma) - torch.log(alpha) < noise_label.double()
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def _unscale(sde, x_in, noise_label):
    """(x, t, sigma) from a network's preconditioned input x_in = x / sqrt(alpha^2 + sigma^2)."""
    t = time_from_noise_label(sde, noise_label)
    alpha, sigma = sde.marginal(t)
    scale = torch.sqrt(alpha**2 + sigma**2).reshape(-1, *[1] * (x_in.ndim - 1))
    return x_in.double() * scale, t, sigma.reshape(scale.shape)


class OracleConditionalEpsNet(nn.Module):
    """A class-conditional eps-network `net(x_in, noise_label, y)` built from the exact scores; y = 2 is null."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.mixture, self.sde, self.num_classes, self.calls = mixture, sde, mixture.num_classes, 0

    def forward(self, x_in, noise_label, y=None):
        self.calls += 1
        x, t, sigma = _unscale(self.sde, x_in, noise_label)
        y = torch.full((x.shape[0],), self.num_classes) if y is None else y
        null = (y == self.num_classes).reshape(-1, *[1] * (x.ndim - 1))
        score_uncond = self.mixture.score(x, t, self.sde)
        score_cond = self.mixture.score(x, t, self.sde, y.clamp(max=self.num_classes - 1))
        return (-sigma * torch.where(null, score_uncond, score_cond)).to(x_in.dtype)


class OracleNoisyClassifier(nn.Module):
    """The exact p_t(c | x) as a noisy classifier `classifier(x_in, noise_label) -> logits`."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.mixture, self.sde, self.num_classes = mixture, sde, mixture.num_classes

    def forward(self, x_in, noise_label):
        x, t, _ = _unscale(self.sde, x_in, noise_label)
        return self.mixture.class_log_posterior(x, t, self.sde)


def _points(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.02 + 0.97 * torch.rand(n, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    return x, t, y


# ---- Exact identities of the guided scores. --------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_cfg_scales_0_and_1_are_the_unconditional_and_conditional_scores(sde):
    """On the real code path (ScoreModel of a conditional eps-net): w=0 -> s(x), w=1 -> s(x|y), w -> the mix."""
    mix = labelled_mixture()
    net = OracleConditionalEpsNet(mix, sde)
    model = ScoreModel(net, sde).double()
    x, t, y = _points()
    uncond, cond = mix.score(x, t, sde), mix.score(x, t, sde, y)
    torch.testing.assert_close(cfg_score_fn(model, y, 0.0)(x, t), uncond, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(cfg_score_fn(model, y, 1.0)(x, t), cond, rtol=1e-8, atol=1e-9)
    net.calls = 0
    torch.testing.assert_close(cfg_score_fn(model, y, 3.0)(x, t), 3 * cond - 2 * uncond, rtol=1e-8, atol=1e-8)
    assert net.calls == 1  # one batched network call per score evaluation ([x; x] with [y; null])
    torch.testing.assert_close(cfg_score_fn(model, 1, 1.0)(x, t), mix.score(x, t, sde, 1), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_guidance_interval_guides_only_inside_its_noise_levels(sde):
    """Kynkaanniemi et al. 2024: w where sigma_t / alpha_t lies in (lo, hi], the conditional score elsewhere; per
    example when the batch has several times, one network call for a batch wholly outside."""
    mix = labelled_mixture()
    net = OracleConditionalEpsNet(mix, sde)
    model = ScoreModel(net, sde).double()
    x, t, y = _points(seed=2)
    level = torch.exp(-sde.logsnr(t))
    lo, hi = float(level.quantile(0.3)), float(level.quantile(0.7))
    inside = (level > lo) & (level <= hi)
    assert 0 < int(inside.sum()) < len(t)
    uncond, cond = mix.score(x, t, sde), mix.score(x, t, sde, y)
    expected = torch.where(inside[:, None], 3 * cond - 2 * uncond, cond)
    torch.testing.assert_close(cfg_score_fn(model, y, 3.0, interval=(lo, hi))(x, t), expected, rtol=1e-8, atol=1e-8)
    everywhere = cfg_score_fn(model, y, 3.0, interval=(0.0, math.inf))(x, t)
    assert torch.equal(everywhere, cfg_score_fn(model, y, 3.0)(x, t))
    net.calls = 0
    t_out = torch.full_like(t, float(t[~inside][0]))  # one shared time outside: the conditional half only
    torch.testing.assert_close(
        cfg_score_fn(model, y, 3.0, interval=(lo, hi))(x, t_out), mix.score(x, t_out, sde, y), rtol=1e-8, atol=1e-9
    )
    assert net.calls == 1


def test_rescaled_guidance_keeps_the_conditional_spread():
    """Lin et al. 2024, Sec. 3.4: phi = 1 gives the guided score the conditional one's standard deviation per example;
    phi mixes it with the plain guided score; phi = 0 is plain guidance."""
    sde = VPSDE()
    mix = labelled_mixture()
    model = ScoreModel(OracleConditionalEpsNet(mix, sde), sde).double()
    x, t, y = _points(seed=3)
    uncond, cond = mix.score(x, t, sde), mix.score(x, t, sde, y)
    plain = 4 * cond - 3 * uncond
    full = cfg_score_fn(model, y, 4.0, rescale=1.0)(x, t)
    torch.testing.assert_close(full.std(dim=1), cond.std(dim=1), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(full / full.norm(dim=1, keepdim=True), plain / plain.norm(dim=1, keepdim=True))
    mixed = cfg_score_fn(model, y, 4.0, rescale=0.7)(x, t)
    torch.testing.assert_close(mixed, 0.7 * full + 0.3 * plain, rtol=1e-8, atol=1e-8)
    assert torch.equal(cfg_score_fn(model, y, 4.0, rescale=0.0)(x, t), cfg_score_fn(model, y, 4.0)(x, t))
    for bad, message in [((1.0, 0.5), "0 <= lo < hi"), ((-1.0, 2.0), "0 <= lo < hi")]:
        with pytest.raises(ValueError, match=message):
            cfg_score_fn(model, y, 2.0, interval=bad)
    with pytest.raises(ValueError, match=r"the guidance rescale phi must lie in \[0, 1\], got 1.5"):
        cfg_score_fn(model, y, 2.0, rescale=1.5)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_classifier_guidance_with_exact_classifier_is_the_conditional_score(sde):
    """Bayes: s(x) + grad log p_t(y|x) = s(x|y) exactly; the gradient is taken even under torch.no_grad()."""
    mix = labelled_mixture()
    x, t, y = _points(seed=1)
    guided = classifier_score_fn(mix.score_fn(sde), OracleNoisyClassifier(mix, sde), sde, y, scale=1.0)
    with torch.no_grad():
        got = guided(x, t)
    torch.testing.assert_close(got, mix.score(x, t, sde, y), rtol=1e-7, atol=1e-8)
    # scale lambda multiplies the gradient: s + 2 (s(x|y) - s(x)).
    guided2 = classifier_score_fn(mix.score_fn(sde), OracleNoisyClassifier(mix, sde), sde, y, scale=2.0)
    expected = 2 * mix.score(x, t, sde, y) - mix.score(x, t, sde)
    torch.testing.assert_close(guided2(x, t), expected, rtol=1e-7, atol=1e-8)


def test_classifier_log_probs_preconditioning_matches_exact_posterior():
    sde = VPSDE()
    mix = labelled_mixture()
    x, t, _ = _points(seed=2)
    got = classifier_log_probs(OracleNoisyClassifier(mix, sde), sde, x, t)
    torch.testing.assert_close(got, mix.class_log_posterior(x, t, sde), rtol=1e-8, atol=1e-9)


# ---- Clear errors. ---------------------------------------------------------------------------------------------------
def test_errors_for_bad_labels_unconditional_models_and_sde_mismatch():
    sde = VPSDE()
    mix = labelled_mixture()
    model = ScoreModel(OracleConditionalEpsNet(mix, sde), sde).double()
    for bad in (2, -1, torch.tensor([0, 5])):
        with pytest.raises(ValueError, match="out of range"):
            cfg_score_fn(model, bad, 2.0)
    with pytest.raises(ValueError, match="out of range"):
        classifier_score_fn(mix.score_fn(sde), OracleNoisyClassifier(mix, sde), sde, 3, 1.0)
    unconditional = ScoreModel(mix.eps_net(sde), sde)
    with pytest.raises(ValueError, match="unconditional"):
        cfg_score_fn(unconditional, 0, 2.0)
    with pytest.raises(ValueError, match="different SDE"):
        check_same_sde(VPSDE().config(), VPSDE(beta_max=10.0).config())
    with pytest.raises(ValueError, match="different SDE"):
        check_same_sde(VPSDE().config(), SubVPSDE().config())
    check_same_sde(VPSDE().config(), VPSDE().config())


def test_inpaint_projection_replaces_known_part_by_perturbed_data():
    """Known entries: alpha_t x_known + sigma_t noise (mean and std exact within 4 s.e.); unknown entries untouched."""
    sde = VPSDE()
    x_known = torch.tensor([[1.5, -2.0]]).expand(20000, 2)
    mask = torch.tensor([1.0, 0.0])
    project = inpaint_projection(sde, x_known, mask, torch.Generator().manual_seed(0))
    x = torch.full((20000, 2), 7.0)
    t = torch.full((20000,), 0.3)
    out = project(x, t)
    alpha, sigma = (v[0].item() for v in sde.marginal(t))
    assert torch.all(out[:, 1] == 7.0)
    assert abs(out[:, 0].mean().item() - alpha * 1.5) < 4 * sigma / math.sqrt(20000)
    assert abs(out[:, 0].std().item() / sigma - 1) < 4 / math.sqrt(2 * 20000)
    with pytest.raises(ValueError, match="mask"):
        inpaint_projection(sde, x_known, torch.tensor([0.5, 1.0]))


def test_inpainting_runs_with_every_fixed_step_sampler_and_refuses_adaptive_ones():
    """Every sampler's steps are projected (the known coordinate is alpha_t x_known + sigma_t noise after each,
    so the unknown one sees it); the ODE sampler's adaptive methods and the adaptive DPM-Solver are refused."""
    from samplers import SAMPLERS, time_grid

    sde, mix = VPSDE(), make_mixture("gmm2d")
    x_T = sde.prior_sampling((8, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    ts, mask, known = (
        time_grid(sde, 6, 1e-3, "logsnr"),
        torch.tensor([1.0, 0.0]),
        torch.zeros(8, 2, dtype=torch.float64),
    )
    options = {"ode": {"method": "heun"}, "ald": {"eps": 1e-6}}
    for name, sampler in SAMPLERS.items():
        seen = []

        def spy(x, t, seen=seen):
            seen.append(x[:, 0].clone())
            return mix.score(x, t, sde)

        x = inpaint(sampler, spy, sde, x_T, ts, known, mask, generator=torch.Generator().manual_seed(0),
                    **options.get(name, {}))  # fmt: skip
        assert torch.equal(x[:, 0], known[:, 0]) and torch.isfinite(x).all(), name
        # at the last calls the known coordinate is ~ sigma_t noise around alpha_t * 0 (projected), not free
        assert seen[-1].abs().max() < 0.5, (name, seen[-1])
    for sampler, options in (("ode", {}), ("dpm_solver", {"method": "adaptive"})):
        with pytest.raises(ValueError, match="adaptive method"):
            inpaint(SAMPLERS[sampler], mix.score_fn(sde), sde, x_T, ts, known, mask, **options)


# ---- Guided sampling with every sampler. -----------------------------------------------------------------------------
SAMPLER_RUNS = {"pc": {}, "ancestral": {}, "ode": {"method": "heun"}, "ddim": {}, "dpm_solver": {}, "ald": {}}


@pytest.mark.parametrize("name", sorted(SAMPLER_RUNS))
def test_every_sampler_runs_guided_scores_exactly_like_the_conditional_score(name):
    """Same x_T and generator: CFG (w=2.5, the batched [x; x] call) and classifier guidance (lambda=1, exact
    classifier) follow the sampler's path under the exact guided / conditional score to round-off, so guidance
    needs nothing from the samplers."""
    sde, mix, y = VPSDE(), labelled_mixture(), 1
    model = ScoreModel(OracleConditionalEpsNet(mix, sde), sde).double()
    score_fns = {
        "exact": mix.score_fn(sde, y),
        "exact_cfg": lambda x, t: 2.5 * mix.score(x, t, sde, y) - 1.5 * mix.score(x, t, sde),
        "cfg": cfg_score_fn(model, y, 2.5),
        "classifier": classifier_score_fn(mix.score_fn(sde), OracleNoisyClassifier(mix, sde), sde, y, 1.0),
    }
    out = {}
    for key, score_fn in score_fns.items():
        g = torch.Generator().manual_seed(0)
        x_T = sde.prior_sampling((64, 2), g, dtype=torch.float64)
        with torch.no_grad():
            out[key] = run_sampler(name, score_fn, sde, x_T, steps=8, generator=g, **SAMPLER_RUNS[name])
    torch.testing.assert_close(out["cfg"], out["exact_cfg"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["classifier"], out["exact"], rtol=1e-6, atol=1e-6)


def _exact_moments(mix, y=None):
    """Mean [D] and covariance [D, D] of p_0 (or p_0(x | c = y)), in closed form."""
    w = mix.weights if y is None else torch.where(mix.labels == y, mix.weights, torch.zeros_like(mix.weights))
    w = w / w.sum()
    mean = (w[:, None] * mix.means).sum(0)
    second = (w[:, None, None] * (mix.covs + mix.means[:, :, None] * mix.means[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None]


def _guided_samples(score_fn, n=2000, seed=0):
    sde = VPSDE()
    g = torch.Generator().manual_seed(seed)
    x_T = sde.prior_sampling((n, 2), g, dtype=torch.float64)
    with torch.no_grad():  # Heun's probability-flow ODE, 25 steps: its bias here is < 1 s.e. (checked with 400)
        return run_sampler("ode", score_fn, sde, x_T, steps=25, method="heun", generator=g)


def _assert_moments(x, mean, cov):
    """Mean within 4 s.e. per coordinate; variances within 4 s.e. of the ratio (sqrt(2/n)) plus 3 % ODE bias."""
    n = x.shape[0]
    assert torch.all((x.mean(0) - mean).abs() < 4 * (cov.diagonal() / n).sqrt()), (x.mean(0), mean)
    assert torch.all((x.var(0) / cov.diagonal() - 1).abs() < 4 * math.sqrt(2 / n) + 0.03), (x.var(0), cov)


def test_guided_samples_reproduce_the_exact_distributions():
    """Monte Carlo (n = 2000): w=0 samples p(x) (mean; E[p(c=1|x)] = P(c=1) = 0.4 exactly), w=1 samples p(x|c=1),
    and classifier guidance with lambda=1 and the exact classifier samples p(x|c=1)."""
    sde, mix = VPSDE(), labelled_mixture()
    model = ScoreModel(OracleConditionalEpsNet(mix, sde), sde).double()
    x = _guided_samples(cfg_score_fn(model, 1, 0.0))
    _assert_moments(x, *_exact_moments(mix))
    posterior = mix.class_log_posterior(x, None, None)[:, 1].exp()  # p_0(c = 1 | x)
    assert abs(posterior.mean().item() - 0.4) < 4 * posterior.std().item() / math.sqrt(x.shape[0])
    plain = _guided_samples(cfg_score_fn(model, 1, 1.0), seed=1)
    _assert_moments(plain, *_exact_moments(mix, 1))
    clf = classifier_score_fn(mix.score_fn(sde), OracleNoisyClassifier(mix, sde), sde, 1, 1.0)
    _assert_moments(_guided_samples(clf, seed=2), *_exact_moments(mix, 1))
    # A stronger guidance scale concentrates on the class: E[p(c=1|x)] rises above its value at w = 1.
    strong = mix.class_log_posterior(_guided_samples(cfg_score_fn(model, 1, 4.0), n=1000), None, None)[:, 1].exp()
    plain = mix.class_log_posterior(plain, None, None)[:, 1].exp()
    assert strong.mean() > plain.mean() + 0.01, (strong.mean(), plain.mean())


@pytest.mark.parametrize("name", ["pc", "ode"])
def test_inpainting_imputes_the_missing_coordinate(name):
    """Two far modes (-2,-2), (2,2), std 0.5; knowing x_1 = 2 puts x_2 in the mode at 2 (exact conditional:
    N(2, 0.25) with weight 1 - 1e-14). Unprojected sampling would give 50 %; the replacement method, an
    approximation, reaches 97-98 % (PC) and 88-89 % (Heun PF-ODE) with 50 steps (3 seeds; s.e. 0.7 %), so we
    require 95 % and 80 %."""
    sde = VPSDE()
    mix = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-2.0, -2.0], [2.0, 2.0]]), torch.tensor([0.5, 0.5]))
    n, g = 2000, torch.Generator().manual_seed(0)
    x_known = torch.tensor([[2.0, 0.0]], dtype=torch.float64).expand(n, 2)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x_T = sde.prior_sampling((n, 2), g, dtype=torch.float64)
    options = {"method": "heun"} if name == "ode" else {}
    x = inpaint(SAMPLERS[name], mix.score_fn(sde), sde, x_T, time_grid(sde, 50), x_known, mask, generator=g, **options)
    assert torch.all(x[:, 0] == 2.0)
    assert (x[:, 1] > 0).double().mean() > (0.95 if name == "pc" else 0.8)
    with pytest.raises(ValueError, match="fixed-step"):
        inpaint(SAMPLERS["ode"], mix.score_fn(sde), sde, x_T, time_grid(sde, 5), x_known, mask)


# ---- The noisy classifier trainer, end to end. -----------------------------------------------------------------------
def test_train_classifier_learns_the_exact_posterior_and_refuses_another_sde(tmp_path):
    """200 steps on the toy mixture: KL(exact p_t(c|x) || classifier) < 0.05 nats at t = 0.3 (its CE, ~0.75, is
    far above that, so an untrained or mispreconditioned net fails); the checkpoint reloads, and with another SDE
    it is refused."""
    from compose.checkpoints import load_classifier
    from configs.toy_cond import get_config
    from training.classifier import train_classifier

    cfg = get_config()
    cfg.classifier.n_iters, cfg.classifier.checkpoint_every = 200, 100
    train_classifier(cfg, tmp_path)
    clf, info = load_classifier(tmp_path, sde=VPSDE())
    assert info["step"] == 200 and info["arch"]["num_classes"] == 4
    sde, mix, g = VPSDE(), make_mixture("gmm2d"), torch.Generator().manual_seed(5)
    x0 = mix.sample(4000, g)
    t = torch.full((4000,), 0.3)
    x_t = sde.perturb(x0, t, torch.randn(x0.shape, generator=g))
    with torch.no_grad():
        log_probs = classifier_log_probs(clf, sde, x_t, t)
    exact = mix.class_log_posterior(x_t, t, sde)
    assert (exact.exp() * (exact - log_probs)).sum(1).mean() < 0.05
    with pytest.raises(ValueError, match="different SDE"):
        load_classifier(tmp_path, sde=VESDE())
    with pytest.raises(ValueError, match="different SDE"):
        load_classifier(tmp_path, sde=VPSDE(beta_max=10.0))

    # The sampling driver's score function: classifier guidance of an unconditional model through the work dir.
    from compose.sampling import build_score_fn

    sampling = {
        **get_config().sampling.to_dict(),
        "label": 1,
        "classifier_scale": 1.0,
        "classifier_workdir": str(tmp_path),
    }
    score_fn = build_score_fn(ScoreModel(mix.eps_net(sde), sde), sampling, None)
    x, t = x_t[:8], t[:8]
    grad = torch.autograd.functional.jacobian(lambda z: classifier_log_probs(clf, sde, z, t)[:, 1].sum(), x)
    with torch.no_grad():
        torch.testing.assert_close(score_fn(x, t), mix.score(x, t, sde) + grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="different SDE"):
        build_score_fn(ScoreModel(mix.eps_net(VESDE()), VESDE()), sampling, None)

    # A class sheet from an unconditional model: the classifier's classes are cycled, one label per sample.
    from compose.sampling import batch_labels, label_classes

    uncond = ScoreModel(mix.eps_net(sde), sde)
    sheet = {**sampling, "label": -1, "class_grid": True}
    assert label_classes(uncond, sheet) == 4 and label_classes(uncond, {**sheet, "classifier_scale": 0.0}) == 0
    assert batch_labels(sheet, label_classes(uncond, sheet), 6, 2, "cpu").tolist() == [2, 3, 0, 1, 2, 3]


def test_sampling_driver_refuses_bad_guidance_requests():
    """Labels or a class grid on an unconditional checkpoint, labels out of range, a classifier scale without a
    classifier."""
    from compose.sampling import build_score_fn
    from configs.default import get_default_config

    sde, mix = VPSDE(), labelled_mixture()
    sampling = get_default_config().sampling.to_dict()
    with pytest.raises(ValueError, match="unconditional"):
        build_score_fn(ScoreModel(mix.eps_net(sde), sde), {**sampling, "label": 3}, None)
    conditional = ScoreModel(OracleConditionalEpsNet(mix, sde), sde).double()
    with pytest.raises(ValueError, match="out of range"):
        build_score_fn(conditional, {**sampling, "label": 5}, torch.full((4,), 5))
    with pytest.raises(ValueError, match="classifier_workdir"):
        build_score_fn(conditional, {**sampling, "label": 1, "classifier_scale": 2.0}, torch.ones(4).long())
    from compose.sampling import sample_images

    with pytest.raises(ValueError, match="class_grid needs a class-conditional model"):
        sample_images(ScoreModel(mix.eps_net(sde), sde), sde, {**sampling, "class_grid": True}, 4, shape=(2,))
    x, t, _ = _points(4)
    score_fn = build_score_fn(conditional, {**sampling, "guidance_scale": 2.0}, torch.ones(4).long())
    torch.testing.assert_close(score_fn(x, t), 2 * mix.score(x, t, sde, 1) - mix.score(x, t, sde), rtol=1e-8, atol=1e-8)


def test_classifier_training_stops_gracefully_on_sigterm_and_resumes_exactly(tmp_path):
    """The classifier's loop has the score loop's guarantees: SIGTERM after a step saves it and exits 75 (the
    resumed run then equals an uninterrupted one), and non-finite losses are skipped, then stop the run."""
    import os
    import signal

    import training.classifier as clf_training
    from configs.toy_cond import get_config
    from infra.checkpoint import CLASSIFIER, list_checkpoints, load_checkpoint
    from training.loop import TrainingDiverged, TrainingInterrupted

    cfg = get_config()
    cfg.classifier.n_iters, cfg.classifier.checkpoint_every, cfg.classifier.log_every = 12, 100, 100
    clf_training.train_classifier(cfg, tmp_path / "straight")
    real = clf_training.classifier_log_probs
    calls = []

    def signal_at_5(*args):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during step 5: it finishes, then the loop stops
        return real(*args)

    clf_training.classifier_log_probs = signal_at_5
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            clf_training.train_classifier(cfg, tmp_path / "resumed")
    finally:
        clf_training.classifier_log_probs = real
    assert stop.value.code == 75
    assert [p.name for p in list_checkpoints(tmp_path / "resumed", CLASSIFIER)] == ["ckpt_000005.pt"]
    clf_training.train_classifier(cfg, tmp_path / "resumed")
    a, b = (load_checkpoint(list_checkpoints(tmp_path / w, CLASSIFIER)[-1])["model"] for w in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Non-finite losses: skipped, then the run stops after training.max_bad_steps of them in a row.
    cfg.training.max_bad_steps = 3
    clf_training.classifier_log_probs = lambda *args: real(*args) * float("nan")
    try:
        with pytest.raises(TrainingDiverged, match="3 consecutive classifier steps"):
            clf_training.train_classifier(cfg, tmp_path / "nan")
    finally:
        clf_training.classifier_log_probs = real


def test_the_sampling_driver_passes_the_guidance_interval_and_rescale():
    """compose.sampling.build_score_fn reads sampling.guidance_sigma_lo / _hi / guidance_rescale from the config."""
    from compose.sampling import build_score_fn
    from configs.default import get_default_config

    sde = VPSDE()
    mix = labelled_mixture()
    model = ScoreModel(OracleConditionalEpsNet(mix, sde), sde).double()
    x, t, y = _points(seed=4)
    sampling = get_default_config().sampling.to_dict()
    sampling.update(guidance_scale=3.0, guidance_sigma_lo=0.5, guidance_sigma_hi=5.0, guidance_rescale=0.5)
    expected = cfg_score_fn(model, y, 3.0, interval=(0.5, 5.0), rescale=0.5)(x, t)
    assert torch.equal(build_score_fn(model, sampling, y)(x, t), expected)
    sampling.update(guidance_sigma_lo=0.0, guidance_sigma_hi=1e9, guidance_rescale=0.0)  # the defaults: plain CFG
    assert torch.equal(build_score_fn(model, sampling, y)(x, t), cfg_score_fn(model, y, 3.0)(x, t))
