"""Sampling from a score model as a config's `sampling` section describes it: the guided score function (built in
ONE place, `build_score_fn`), class labels, batches with a progress bar, and the notebook API `sample`.

In a notebook: `x, info = sample(model, "dpm_solver", num_samples=16, steps=20, grid="logsnr")`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from compose.biased import bias_warning, option_defaults
from configs.default import get_default_config
from models.guidance import NO_LIMIT, guidance_interval, guided_score_fn
from samplers import (
    SAMPLER_OPTIONS,
    check_sampler_options,
    count_nfe,
    default_grid,
    options_from_config,
    run_sampler,
    steps_or_default,
)
from samplers.dpm_solver_singlestep import fast_orders
from samplers.restart import DEFAULT_INTERVALS, parse_intervals
from sde import ScoreFn, sde_from_config
from sde.ode_methods import FIXED_METHODS

from .checkpoints import load_classifier

logger = logging.getLogger(__name__)


class SamplingStopped(RuntimeError):
    """Sampling was stopped between two steps because `should_stop()` said so (e.g. SIGTERM during a grid)."""


def build_score_fn(model, sampling: Mapping | None, labels: torch.Tensor | None = None) -> ScoreFn:
    """The score_fn(x, t) every sampler sees: the model's score for the labels, with classifier-free guidance
    (sampling.guidance_scale; limited to the noise levels (guidance_sigma_lo, guidance_sigma_hi], rescaled by
    guidance_rescale) and classifier guidance (sampling.classifier_scale) from models/guidance.py."""
    if sampling is None:
        return model.score_fn(labels)
    classifier = classifier_for_sampling(sampling, model)
    if labels is None and sampling["label"] >= 0:  # an unconditional model: only a classifier can use the label
        labels = torch.tensor(int(sampling["label"]))
    if labels is None and classifier is not None:
        raise ValueError("sampling.classifier_scale > 0 needs a class: set sampling.label or sampling.class_grid")
    if labels is None:
        return model.score_fn(None)
    interval = guidance_interval(sampling.get("guidance_sigma_lo", 0.0), sampling.get("guidance_sigma_hi", NO_LIMIT))
    return guided_score_fn(
        model,
        labels,
        sampling["guidance_scale"],
        classifier,
        sampling["classifier_scale"],
        guidance_interval=interval,
        guidance_rescale=sampling.get("guidance_rescale", 0.0),
    )


def label_classes(model, sampling: Mapping) -> int:
    """Number of classes labels are drawn from: the model's, or the guiding classifier's for an unconditional
    model (classifier guidance needs only the classifier to know the classes)."""
    num_classes = int(getattr(model, "num_classes", 0))
    classifier = None if num_classes else classifier_for_sampling(sampling, model)
    return int(getattr(classifier, "num_classes", 0)) if classifier is not None else num_classes


def batch_labels(sampling: Mapping, num_classes: int, num: int, offset: int, device) -> torch.Tensor | None:
    """Class labels of one batch: None (unconditional), sampling.label for all, or cycling classes (class_grid)."""
    if not num_classes:
        return None
    if sampling["class_grid"]:
        return (torch.arange(num, device=device) + offset) % num_classes
    return None if sampling["label"] < 0 else torch.full((num,), int(sampling["label"]), device=device)


def model_shape(model, cfg: Mapping | None = None) -> tuple[int, ...]:
    """Shape of one sample, from a (stored) config or the network's attributes."""
    if cfg is not None:
        if cfg["model"]["name"] == "mlp":
            return (int(cfg["data"]["dim"]),)
        return (int(cfg["data"]["num_channels"]), int(cfg["data"]["image_size"]), int(cfg["data"]["image_size"]))
    net = model.net
    if hasattr(net, "image_size"):
        return (int(getattr(net, "in_channels", 1)), int(net.image_size), int(net.image_size))
    if hasattr(net, "dim"):
        return (int(net.dim),)
    raise ValueError("cannot tell the sample shape from the network; pass shape=(C, H, W) or (d,)")


def with_default_steps(sampling: Mapping) -> dict:
    """The sampling settings with `steps` = 0 replaced by the sampler's default (samplers.DEFAULT_STEPS)."""
    return {**sampling, "steps": steps_or_default(sampling["sampler"], sampling["steps"])}


def steps_bar(sampling: Mapping, score_fn, desc: str = "steps") -> tqdm:
    """A progress bar over one batch's sampler steps (time grid points; levels for ALD and for score_sde's PC loop,
    which steps from every one of them; DPM-Solver-fast's K steps), showing the NFE so far. Adaptive solvers (ODE,
    DPM-Solver's) report only at the end, so their bar has no total."""
    name, steps = sampling["sampler"], int(sampling["steps"])
    adaptive = (name == "ode" and sampling["ode_method"] not in FIXED_METHODS) or (
        name == "dpm_solver" and sampling.get("dpm_method") in ("adaptive", "adaptive_pid")
    )
    per_level = name == "ald" or (name == "pc" and sampling.get("pc_loop") == "score_sde")
    total = None if adaptive else steps + per_level
    if name == "dpm_solver" and sampling.get("dpm_method") == "fast":  # its steps of orders 3, ..., 2 / 1
        total = len(fast_orders(steps, int(sampling.get("order", 2))))
    if name == "restart":  # every interval restarts K times with N_restart - 1 steps
        intervals = sampling.get("restart_intervals", "default")
        intervals = DEFAULT_INTERVALS if intervals == "default" else intervals
        total += sum(k * (n - 1) for n, k, _, _ in parse_intervals(intervals))
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True, postfix={"nfe": score_fn.nfe})


@torch.no_grad()
def sample_batch(
    model,
    sde,
    sampling: Mapping,
    num: int,
    shape,
    generator: torch.Generator,
    device,
    labels: torch.Tensor | None = None,
    progress: bool = False,
    should_stop=None,
) -> tuple[torch.Tensor, int]:
    """One batch of num samples with the configured sampler; returns (samples [num, *shape], NFE). `progress`
    shows a bar over the sampler's steps; `should_stop()`, checked after every step, raises SamplingStopped when
    true (adaptive ODE solvers report only at the end)."""
    sampling = with_default_steps(sampling)
    name = sampling["sampler"]
    x_T = sde.prior_sampling((num, *shape), generator, device)
    score_fn = count_nfe(build_score_fn(model, sampling, labels))
    bar = steps_bar(sampling, score_fn) if progress else None

    def callback(info: dict) -> None:
        if bar is not None:
            bar.set_postfix(nfe=score_fn.nfe, refresh=False)
            bar.update(1)
        if should_stop is not None and should_stop():
            raise SamplingStopped(f"sampling stopped after step {info['i'] + 1} of {sampling['steps']}")

    x = run_sampler(
        name,
        score_fn,
        sde,
        x_T,
        steps=sampling["steps"],
        grid=sampling["grid"],
        t_min=sampling["t_min"],
        t_max=sampling["t_max"] or None,
        generator=generator,
        callback=callback if bar is not None or should_stop is not None else None,
        **options_from_config(name, sampling),
    )
    if bar is not None:
        bar.close()
    return x, score_fn.nfe


def sample_images(
    model,
    sde,
    sampling: Mapping,
    num: int,
    generator: torch.Generator | None = None,
    device=None,
    shape=None,
    progress: bool = False,
    should_stop=None,
) -> tuple[torch.Tensor, dict]:
    """num samples in batches of sampling.batch_size (in memory; no files); returns (x, info). `should_stop`: see
    `sample_batch`."""
    for name, value in (("number of samples", num), ("batch size", sampling["batch_size"])):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    sampling = with_default_steps(sampling)
    device = torch.device(device or next(model.parameters(), torch.empty(0)).device)
    shape = tuple(shape) if shape is not None else model_shape(model)
    generator = generator or torch.Generator(device).manual_seed(0)
    check_sampler_options(
        sampling["sampler"],
        sde,
        steps=sampling["steps"],
        grid=sampling["grid"],
        t_min=sampling["t_min"],
        t_max=sampling["t_max"] or None,
        **options_from_config(sampling["sampler"], sampling),
    )
    xs, nfes, start, num_classes = [], [], time.perf_counter(), label_classes(model, sampling)
    if sampling["class_grid"] and not num_classes:
        raise ValueError(
            "sampling.class_grid needs a class-conditional model or classifier guidance "
            "(sampling.classifier_scale > 0 with a classifier); this model is unconditional"
        )
    for offset in tqdm(range(0, num, sampling["batch_size"]), disable=not progress, desc="sampling"):
        n = min(sampling["batch_size"], num - offset)
        labels = batch_labels(sampling, num_classes, n, offset, device)
        x, nfe = sample_batch(model, sde, sampling, n, shape, generator, device, labels, progress, should_stop)
        xs.append(x)
        nfes.append(nfe)
    info = sampling_info(sampling, nfes, time.perf_counter() - start, num)
    return torch.cat(xs), info


def sampling_info(sampling: Mapping, nfes: list[int], seconds: float, num: int) -> dict:
    """The record of one sampling run (also the JSON line of samples/samples.jsonl)."""
    name = sampling["sampler"]
    return {
        "sampler": name,
        "options": options_from_config(name, sampling),
        "steps": sampling["steps"],
        "grid": sampling["grid"],
        "t_min": sampling["t_min"],
        "t_max": sampling["t_max"],
        "num_samples": num,
        "batch_size": sampling["batch_size"],
        "nfe": float(np.mean(nfes)) if nfes else 0.0,
        "nfe_per_batch": nfes,
        "wall_time": seconds,
    }


def default_sampling() -> dict:
    """The `sampling` section of configs/default.py as a plain dict."""
    return get_default_config().sampling.to_dict()


def sample(
    model,
    sampler: str = "pc",
    num_samples: int = 64,
    *,
    batch_size: int | None = None,
    shape=None,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    **options,
) -> tuple[torch.Tensor, dict]:
    """Notebook API: samples of a ScoreModel with a named sampler; options by sampler keyword (`method`,
    `variance`, ...) or config key (`steps`, `grid`, `t_min`, `ode_method`, ...). Returns (x, info)."""
    sampling = default_sampling()
    sampling.update(sampler=sampler, batch_size=batch_size or num_samples)
    if sampler not in SAMPLER_OPTIONS:
        check_sampler_options(sampler, model.sde)  # raises, listing the valid names
    keys = SAMPLER_OPTIONS[sampler]
    for key, value in options.items():
        if key not in keys and key not in sampling:
            valid = sorted(set(keys) | set(sampling))
            raise ValueError(f"unknown option {key!r} for sampler {sampler!r}; valid: {valid}")
        sampling[keys.get(key, key)] = value
    grid = default_grid(model.sde, sampler) if sampling["grid"] == "default" else sampling["grid"]
    chosen = {**option_defaults(sampler), **options_from_config(sampler, sampling)}
    warning = bias_warning(sampler, getattr(model.sde, "name", ""), grid, chosen)
    if warning:
        logger.warning(warning)
    return sample_images(model, model.sde, sampling, num_samples, generator, device, shape, progress)


@functools.lru_cache(maxsize=4)
def _cached_classifier(workdir: str, device: str, sde_json: str) -> nn.Module:
    classifier, info = load_classifier(workdir, device, sde_from_config(json.loads(sde_json)))
    logger.info("classifier guidance with %s (step %d)", info["path"], info["step"])
    return classifier


def classifier_for_sampling(sampling: Mapping, model) -> nn.Module | None:
    """The noisy classifier of sampling.classifier_workdir when sampling.classifier_scale != 0 (loaded once per
    work dir and device; refused if its SDE differs from the model's), else None."""
    if not sampling["classifier_scale"]:
        return None
    if not sampling["classifier_workdir"]:
        raise ValueError(
            f"sampling.classifier_scale = {sampling['classifier_scale']} needs "
            "sampling.classifier_workdir (train one with --mode train_classifier)"
        )
    device = str(next(model.parameters(), torch.empty(0)).device)
    return _cached_classifier(str(sampling["classifier_workdir"]), device, json.dumps(model.sde.config()))
