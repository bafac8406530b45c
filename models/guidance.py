"""Guided score functions: classifier-free guidance, classifier guidance, and inpainting by projection.

All three live in the score function (or in a projection applied between sampler steps), so every sampler,
which sees only `score_fn(x, t)` and an `sde`, runs them unchanged.

- Classifier-free guidance (Ho & Salimans 2022, Eq. 6): one network trained with label dropout gives both
  s(x, t | y) and s(x, t) = s(x, t | null); the guided score is w s(x, t | y) + (1 - w) s(x, t). Here w = 0 is
  unconditional and w = 1 conditional (Ho & Salimans' w is our w - 1). Optionally only inside an interval of noise
  levels (Kynkaanniemi et al. 2024) and rescaled to the conditional score's spread (Lin et al. 2024).
- Classifier guidance (Dhariwal & Nichol 2021, Eq. 12; Song et al. 2021, Eq. 14): a classifier of noisy data
  p_t(c | x_t) gives s(x, t) + lambda grad_x log p_t(y | x); with lambda = 1 and the exact classifier this is
  exactly the conditional score s(x, t | y) (Bayes' rule).
- Inpainting / imputation (Song et al. 2021, App. I.2): after every step the known part of x is replaced by
  a fresh forward-perturbed copy of the known data, x = mask * perturb(x_known, t) + (1 - mask) * x.

A noisy classifier is a network `classifier(x_in, noise_label) -> logits` with the same preconditioning as the
score networks (`ScoreModel.eps`): x_in = x / sqrt(alpha^2 + sigma^2) and noise_label = log(sigma / alpha).
`classifier_log_probs` is the only place that applies it, for training and for guidance alike.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sde import SDE, ScoreFn, as_time
from sde.ode_methods import ADAPTIVE_METHODS, FIXED_METHODS

from .score import network_input

Projection = Callable[[Tensor, Tensor], Tensor]  # project(x [B, *D], t [B]) -> x [B, *D]
# Sampler `method` values that take internal steps no callback sees: the ODE sampler's adaptive solvers and the
# adaptive DPM-Solver-12 / -23, Lu et al.'s and k-diffusion's (the samplers call back once, at the end).
ADAPTIVE_STEPPING = (*ADAPTIVE_METHODS, "adaptive", "adaptive_pid")


def check_guidance_labels(y: int | Tensor, num_classes: int, what: str = "model") -> Tensor:
    """Class labels for guidance as a Long tensor (scalar or [B]); each must be a real class 0..num_classes-1."""
    if num_classes <= 0:
        raise ValueError(
            f"guidance needs a class-conditional {what}, but this {what} is unconditional "
            f"(num_classes=0); train one with model.num_classes > 0, or sample with label=-1"
        )
    y = torch.as_tensor(y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim > 1:
        raise ValueError(f"class labels must be an integer or an integer tensor [B], got {y.dtype} {list(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"class label {bad} out of range; allowed: 0..{num_classes - 1} ({num_classes} classes)")
    return y.long()


def _batch_labels(y: Tensor, x: Tensor) -> Tensor:
    """Labels broadcast to x's batch [B] on x's device."""
    y = y.to(x.device)
    if y.ndim == 0:
        return y.expand(x.shape[0])
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"got {y.shape[0]} class labels for a batch of {x.shape[0]}")
    return y


NO_LIMIT = 1e9  # a config's guidance_sigma_hi at or above it: no upper limit (configs/default.py's value)


def guidance_interval(lo: float, hi: float) -> tuple[float, float] | None:
    """The config's guidance_sigma_lo / _hi as `cfg_score_fn`'s interval: None where they leave every level guided."""
    return None if lo == 0 and hi >= NO_LIMIT else (lo, hi)


def check_guidance_options(interval, rescale) -> tuple[float, float]:
    """The guidance interval as (lo, hi) noise levels with 0 <= lo < hi (None: every level) and the rescale phi in
    [0, 1]; ValueError naming the bad value."""
    lo, hi = (0.0, math.inf) if interval is None else interval
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or not 0 <= lo < hi:
        raise ValueError(f"the guidance interval must be noise levels 0 <= lo < hi (sigma / alpha), got {interval!r}")
    if not (isinstance(rescale, (int, float)) and not isinstance(rescale, bool) and 0 <= rescale <= 1):
        raise ValueError(f"the guidance rescale phi must lie in [0, 1], got {rescale!r}")
    return float(lo), float(hi)


def rescale_guided(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """Lin et al. 2024's rescaled guidance: the guided prediction scaled to the conditional one's standard deviation
    (per example, over all other dimensions), mixed back with weight phi. Applied to the score, as diffusers'
    `rescale_noise_cfg` applies it to the noise prediction: the two differ by a factor -sigma per example, which the
    ratio of standard deviations cancels."""
    dims = list(range(1, guided.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return phi * guided * ratio + (1 - phi) * guided


def cfg_score_fn(
    model: nn.Module, y: int | Tensor, scale: float, interval: tuple[float, float] | None = None, rescale: float = 0.0
) -> ScoreFn:
    """Classifier-free guidance w s(x,t|y) + (1-w) s(x,t) (Ho & Salimans 2022, Eq. 6, with w = 1 + their w).

    `model` is a class-conditional `ScoreModel`-like module: `model(x, t, y) -> score`, `.num_classes`, null
    label = num_classes, and `.sde` where an interval is given. One batched network call on [x; x] with labels
    [y; null] per score evaluation, so the samplers' NFE counts stay one per call (w = 1 and w = 0 need only one
    half). `interval` = (lo, hi): guidance only where the noise level sigma_t / alpha_t lies in (lo, hi], the plain
    conditional score elsewhere (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"; EDM2's
    sigma). `rescale` = phi > 0: Lin et al. 2024's rescaled guidance (`rescale_guided`), where guidance applies.
    """
    num_classes = int(getattr(model, "num_classes", 0))
    y = check_guidance_labels(y, num_classes)
    w = float(scale)
    lo, hi = check_guidance_options(interval, rescale)
    limited = interval is not None

    def guided(x: Tensor, t: Tensor, labels: Tensor, null: Tensor) -> Tensor:
        if w == 0.0:
            return model(x, t, null)
        score_cond, score_uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        score = w * score_cond + (1 - w) * score_uncond
        return rescale_guided(score, score_cond, rescale) if rescale else score

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        t, labels = as_time(t, x), _batch_labels(y, x)
        null = torch.full_like(labels, num_classes)
        if w == 1.0:
            return model(x, t, labels)
        if not limited:
            return guided(x, t, labels, null)
        level = torch.exp(-model.sde.logsnr(t.double()))
        inside = (level > lo) & (level <= hi)
        if bool(inside.all()):
            return guided(x, t, labels, null)
        if not bool(inside.any()):
            return model(x, t, labels)
        out = model(x, t, labels)  # examples at different levels (per-example times): guide those inside
        out[inside] = guided(x[inside], t[inside], labels[inside], null[inside])
        return out

    return score_fn


def classifier_log_probs(classifier: nn.Module, sde: SDE, x: Tensor, t: Tensor | float) -> Tensor:
    """log p_t(c | x_t) [B, C] of a noisy classifier, with the score networks' preconditioning (see module doc)."""
    return F.log_softmax(classifier(*network_input(sde, x, as_time(t, x))), dim=-1)


def classifier_score_fn(score_fn: ScoreFn, classifier: nn.Module, sde: SDE, y: int | Tensor, scale: float) -> ScoreFn:
    """Classifier guidance s(x,t) + lambda grad_x log p_t(y | x) (Dhariwal & Nichol 2021; Song et al. 2021, Eq. 14).

    `classifier(x_in, noise_label) -> logits` must be trained on `sde`'s perturbed data (training/classifier.py);
    its `num_classes` attribute, if present, bounds the labels. Gradients are taken even under torch.no_grad().
    """
    y = check_guidance_labels(y, int(getattr(classifier, "num_classes", 1 << 30)), what="classifier")
    lam = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        t, labels = as_time(t, x), _batch_labels(y, x)
        dtype = next(classifier.parameters(), x).dtype  # the classifier's precision (x's for parameter-free ones)
        with torch.enable_grad():
            x_in = x.detach().to(dtype).requires_grad_(True)
            log_probs = classifier_log_probs(classifier, sde, x_in, t.detach().to(dtype))
            if labels.numel() and int(labels.max()) >= log_probs.shape[-1]:
                raise ValueError(
                    f"class label {int(labels.max())} out of range for a classifier of {log_probs.shape[-1]} classes"
                )
            selected = log_probs.gather(1, labels[:, None]).sum()
            grad = torch.autograd.grad(selected, x_in)[0]
        return score_fn(x, t) + lam * grad.to(x.dtype)

    return guided


def check_same_sde(score_sde: dict, classifier_sde: dict) -> None:
    """Raise ValueError unless the classifier was trained on the score model's SDE (both as `SDE.config()`)."""
    keys = sorted(set(score_sde) | set(classifier_sde))
    diff = [
        f"{k}: score model {score_sde.get(k)!r} vs classifier {classifier_sde.get(k)!r}"
        for k in keys
        if score_sde.get(k) != classifier_sde.get(k)
    ]
    if diff:
        raise ValueError(
            "the classifier was trained on a different SDE than the score model, so its gradient "
            "is not grad log p_t(y | x) of this diffusion (" + "; ".join(diff) + ")"
        )


def inpaint_projection(sde: SDE, x_known: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Projection:
    """Replace the known part by a perturbed copy of the data: x = m perturb(x_known, t) + (1-m) x (Song et al.
    2021, App. I.2). `mask` is 1 on known entries and broadcasts against x_known; fresh noise at every call."""
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError("inpainting mask must hold only 0 (unknown) and 1 (known)")
    mask = mask.to(x_known.dtype)

    def project(x: Tensor, t: Tensor) -> Tensor:
        t = as_time(t, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mask * sde.perturb(x_known, t, noise) + (1 - mask) * x

    return project


def inpaint(
    sampler: Callable,
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    x_known: Tensor,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    **options,
) -> Tensor:
    """Impute the unknown entries (mask = 0) of x_known with any sampler of `samplers.SAMPLERS` (Song et al. 2021,
    App. I.2): the projection runs at T and after every sampler step, through the samplers' `callback`, which
    replaces the step's x in place; the known entries of the result are x_known itself.

    Adaptive solvers (the ODE sampler's, DPM-Solver-12 / -23) take internal steps that no callback sees, so they
    are refused: use a fixed-step method.
    """
    method = options.get("method", _default_option(sampler, "method"))
    if method in ADAPTIVE_STEPPING:
        raise ValueError(
            f"inpainting needs a projection after every step, which the adaptive method {method!r} does not "
            f"expose; use a fixed-step one (ode: {list(FIXED_METHODS)}; dpm_solver: multistep, singlestep, fast)"
        )
    project = inpaint_projection(sde, x_known, mask, generator)

    def callback(info: dict) -> None:
        info["x"].copy_(project(info["x"], as_time(float(info["t"]), info["x"])))

    x = project(x, as_time(float(ts[0]), x))
    x = sampler(score_fn, sde, x, ts, generator=generator, callback=callback, **options)
    known = mask.to(x.dtype)
    return known * x_known + (1 - known) * x


def _default_option(sampler: Callable, name: str):
    """Default value of a sampler's keyword option (None if it has no such option)."""
    param = inspect.signature(sampler).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def guided_score_fn(
    model: nn.Module,
    y: int | Tensor,
    guidance_scale: float = 1.0,
    classifier: nn.Module | None = None,
    classifier_scale: float = 0.0,
    guidance_interval: tuple[float, float] | None = None,
    guidance_rescale: float = 0.0,
) -> ScoreFn:
    """The sampling score for labels y: classifier-free guidance with weight w on a conditional model (plain
    s(x|y) at w = 1; an unconditional model gives s(x)), limited to a noise-level interval and rescaled if asked
    (`cfg_score_fn`), plus lambda grad log p_t(y|x) if a classifier is given."""
    if int(getattr(model, "num_classes", 0)) > 0:
        score_fn = cfg_score_fn(model, y, guidance_scale, guidance_interval, guidance_rescale)
    elif classifier is None or not classifier_scale:
        raise ValueError(
            "class labels were requested from an unconditional model (num_classes=0): train a "
            "conditional one (model.num_classes > 0), or give a noisy classifier and a classifier scale"
        )
    else:
        score_fn = model.score_fn(None)
    if classifier is not None and classifier_scale:
        score_fn = classifier_score_fn(score_fn, classifier, model.sde, y, classifier_scale)
    return score_fn
