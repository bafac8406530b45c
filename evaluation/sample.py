"""Sampling driver: checkpoint -> batches of samples -> PNG, .npz and a JSON line in samples/samples.jsonl.

`run_sampling(cfg, workdir)` is `main.py --mode sample`; `sample_to_disk` does the work and returns the record.
It draws cfg.sampling.num_samples samples in batches, each batch from its own generator seeded by (cfg.seed,
batch index), and writes every finished batch atomically to samples/parts_<sampler>_<key>/, so a killed run
resumes where it stopped and gives the same samples as an uninterrupted one. At the end the parts are merged
into samples/<sampler>_<stamp>.npz and .png (an image grid, or a scatter plot for vector data) and one JSON
line with the sampler, its options, NFE and wall time. Under torchrun the batches are shared out round robin over
the processes and gathered in order (training/distributed.py): the same samples as one process; rank 0 writes them.

In a notebook: `x, info = sample(model, "dpm_solver", num_samples=16, steps=20, grid="logsnr")`.
The score function is built in ONE place, `build_score_fn`: guidance (models/guidance.py) extends it there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samplers import SAMPLER_OPTIONS, check_sampler_options, count_nfe, options_from_config, run_sampler
from sde import ScoreFn

logger = logging.getLogger(__name__)


def build_score_fn(model, sampling: Mapping | None, labels: torch.Tensor | None = None) -> ScoreFn:
    """The score_fn(x, t) every sampler sees: the model's score for the labels, with classifier-free guidance
    (sampling.guidance_scale) and classifier guidance (sampling.classifier_scale) from models/guidance.py."""
    if sampling is None:
        return model.score_fn(labels)
    from models.guidance import guided_score_fn
    from training.classifier import classifier_for_sampling

    classifier = classifier_for_sampling(sampling, model)
    if labels is None and sampling["label"] >= 0:  # an unconditional model: only a classifier can use the label
        labels = torch.tensor(int(sampling["label"]))
    if labels is None and classifier is not None:
        raise ValueError("sampling.classifier_scale > 0 needs a class: set sampling.label or sampling.class_grid")
    if labels is None:
        return model.score_fn(None)
    return guided_score_fn(model, labels, sampling["guidance_scale"], classifier, sampling["classifier_scale"])


def label_classes(model, sampling: Mapping) -> int:
    """Number of classes labels are drawn from: the model's, or the guiding classifier's for an unconditional
    model (classifier guidance needs only the classifier to know the classes)."""
    from training.classifier import classifier_for_sampling

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


def steps_bar(sampling: Mapping, score_fn, desc: str = "steps") -> tqdm:
    """A progress bar over one batch's sampler steps (time grid points; levels for ALD), showing the NFE so far.
    Adaptive ODE solvers report only at the end, so their bar has no total."""
    name, steps = sampling["sampler"], int(sampling["steps"])
    adaptive = name == "ode" and sampling["ode_method"] not in ("euler", "heun", "rk4")
    total = None if adaptive else steps + (name == "ald")
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True,
                postfix={"nfe": score_fn.nfe})


@torch.no_grad()
def sample_batch(model, sde, sampling: Mapping, num: int, shape, generator: torch.Generator, device,
                 labels: torch.Tensor | None = None, progress: bool = False) -> tuple[torch.Tensor, int]:
    """One batch of num samples with the configured sampler; returns (samples [num, *shape], NFE). `progress`
    shows a bar over the sampler's steps."""
    name = sampling["sampler"]
    x_T = sde.prior_sampling((num, *shape), generator, device)
    score_fn = count_nfe(build_score_fn(model, sampling, labels))
    bar = steps_bar(sampling, score_fn) if progress else None

    def callback(info: dict) -> None:
        bar.set_postfix(nfe=score_fn.nfe, refresh=False)
        bar.update(1)

    x = run_sampler(name, score_fn, sde, x_T, steps=sampling["steps"], grid=sampling["grid"],
                    t_min=sampling["t_min"], generator=generator, callback=callback if bar is not None else None,
                    **options_from_config(name, sampling))
    if bar is not None:
        bar.close()
    return x, score_fn.nfe


def sample_images(model, sde, sampling: Mapping, num: int, generator: torch.Generator | None = None, device=None,
                  shape=None, progress: bool = False) -> tuple[torch.Tensor, dict]:
    """num samples in batches of sampling.batch_size (in memory; no files); returns (x, info)."""
    device = torch.device(device or next(model.parameters(), torch.empty(0)).device)
    shape = tuple(shape) if shape is not None else model_shape(model)
    generator = generator or torch.Generator(device).manual_seed(0)
    check_sampler_options(sampling["sampler"], sde, steps=sampling["steps"], grid=sampling["grid"],
                          t_min=sampling["t_min"], **options_from_config(sampling["sampler"], sampling))
    xs, nfes, start, num_classes = [], [], time.perf_counter(), label_classes(model, sampling)
    for offset in tqdm(range(0, num, sampling["batch_size"]), disable=not progress, desc="sampling"):
        n = min(sampling["batch_size"], num - offset)
        labels = batch_labels(sampling, num_classes, n, offset, device)
        x, nfe = sample_batch(model, sde, sampling, n, shape, generator, device, labels, progress=progress)
        xs.append(x)
        nfes.append(nfe)
    info = sampling_info(sampling, nfes, time.perf_counter() - start, num)
    return torch.cat(xs), info


def sampling_info(sampling: Mapping, nfes: list[int], seconds: float, num: int) -> dict:
    """The record of one sampling run (also the JSON line of samples/samples.jsonl)."""
    name = sampling["sampler"]
    return {"sampler": name, "options": options_from_config(name, sampling), "steps": sampling["steps"],
            "grid": sampling["grid"], "t_min": sampling["t_min"], "num_samples": num,
            "batch_size": sampling["batch_size"], "nfe": float(np.mean(nfes)) if nfes else 0.0,
            "nfe_per_batch": nfes, "wall_time": seconds}


def default_sampling() -> dict:
    """The `sampling` section of configs/default.py as a plain dict."""
    from configs.default import get_default_config

    return get_default_config().sampling.to_dict()


def sample(model, sampler: str = "pc", num_samples: int = 64, *, batch_size: int | None = None, shape=None,
           generator: torch.Generator | None = None, device=None, progress: bool = False,
           **options) -> tuple[torch.Tensor, dict]:
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
    return sample_images(model, model.sde, sampling, num_samples, generator, device, shape, progress)


# ---- The command-line run: batches on disk, resumable. ------------------------------------------------------------
def run_key(sampling: Mapping, checkpoint: Path, seed: int) -> str:
    """A short hash of everything that determines the samples (parts of another setup are never mixed in)."""
    keys = ("sampler", "steps", "grid", "t_min", "num_samples", "batch_size", "label", "class_grid",
            "guidance_scale", "classifier_scale", "classifier_workdir", "use_ema")
    what = {k: sampling[k] for k in keys} | options_from_config(sampling["sampler"], sampling)
    what |= {"checkpoint": str(checkpoint.resolve()), "mtime": checkpoint.stat().st_mtime, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


def save_npz_atomic(path: Path, **arrays) -> None:
    """Write an .npz through a temporary file and an atomic rename (a killed write leaves no partial file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_part(path: Path) -> dict | None:
    """A finished batch, or None if it is missing or unreadable."""
    try:
        with np.load(path) as part:
            return {k: part[k] for k in part.files}
    except (OSError, ValueError, EOFError):
        return None


def save_scatter(x: torch.Tensor, path: Path, title: str) -> None:
    """Scatter plot of 2-D samples (the first two coordinates of vector samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(x[:, 0].numpy(), x[:, 1 if x.shape[1] > 1 else 0].numpy(), s=2, alpha=0.5)
    ax.set(title=title, aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_sampling(cfg, workdir: str) -> None:
    """`main.py --mode sample`: `sample_to_disk`, returning None (absl's app.run exits with a mode's result)."""
    sample_to_disk(cfg, workdir)


def sample_to_disk(cfg, workdir: str) -> dict:
    """Load the latest (or the configured) checkpoint, sample in resumable batches, write PNG, .npz and JSON line;
    returns the JSON line's record."""
    from training import distributed
    from training.checkpoint import config_from_dict, load_score_model, resolve_checkpoint

    s = cfg.sampling.to_dict()
    dist = distributed.setup(cfg)  # under torchrun: batches shared out round robin (one process: all of them)
    device = dist.device
    checkpoint = resolve_checkpoint(cfg.sampling.checkpoint or workdir)
    model, stored = load_score_model(checkpoint, device, cfg.sampling.use_ema)
    sde, shape = model.sde, model_shape(model, config_from_dict(stored).to_dict())
    options = options_from_config(s["sampler"], s)
    check_sampler_options(s["sampler"], sde, steps=s["steps"], grid=s["grid"], t_min=s["t_min"], **options)
    out_dir = Path(workdir) / "samples"
    parts_dir = out_dir / f"parts_{s['sampler']}_{run_key(s, checkpoint, cfg.seed)}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    num, bs, num_classes = s["num_samples"], s["batch_size"], label_classes(model, s)
    n_batches = -(-num // bs)
    # Draw the missing batches (each from its own generator, so a resumed run gives the same samples).
    parts, resumed = [], 0
    for b in tqdm(range(n_batches), desc=f"sampling ({s['sampler']})", unit="batch", disable=not dist.is_main):
        if not dist.owns(b):  # another rank draws it: the seed depends on the batch index only, not on the rank
            continue
        path = parts_dir / f"batch_{b:05d}.npz"
        part = load_part(path)
        if part is None:
            n = min(bs, num - b * bs)
            generator = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + b)
            labels = batch_labels(s, num_classes, n, b * bs, device)
            start = time.perf_counter()
            x, nfe = sample_batch(model, sde, s, n, shape, generator, device, labels, progress=dist.is_main)
            seconds = time.perf_counter() - start
            part = {"x": x.cpu().float().numpy(), "nfe": np.array(nfe), "seconds": np.array(seconds)}
            save_npz_atomic(path, **part)
        else:
            resumed += 1
        parts.append(part)
    parts, resumed = distributed.gather_round_robin(parts, dist), sum(distributed.gather_objects(resumed, dist))
    if not dist.is_main:  # rank 0 writes the outputs
        return distributed.broadcast_object(None, dist)
    # Merge, write the outputs, record the run.
    x = torch.from_numpy(np.concatenate([p["x"] for p in parts]))
    info = sampling_info(s, [int(p["nfe"]) for p in parts], float(sum(float(p["seconds"]) for p in parts)), num)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    npz_path, png_path = out_dir / f"{s['sampler']}_{stamp}.npz", out_dir / f"{s['sampler']}_{stamp}.png"
    save_npz_atomic(npz_path, samples=x.numpy(), nfe=np.array(info["nfe_per_batch"]))
    if x.ndim == 2:
        save_scatter(x, png_path, f"{s['sampler']}, {num} samples, NFE {info['nfe']:.0f}")
    else:
        from evaluation.images import save_grid

        if s["class_grid"] and num_classes:  # labels cycle i % C: regroup so that each row is one class
            order = torch.argsort(torch.arange(len(x)) % num_classes, stable=True)
            save_grid(x[order], png_path, nrow=-(-len(x) // num_classes))
        else:
            save_grid(x, png_path, nrow=max(int(len(x) ** 0.5), 1))
    info |= {"sde": sde.config(), "checkpoint": str(checkpoint), "npz": str(npz_path), "png": str(png_path),
             "stamp": stamp, "resumed_batches": resumed, "seed": cfg.seed}
    with open(out_dir / "samples.jsonl", "a") as f:
        f.write(json.dumps(info) + "\n")
    shutil.rmtree(parts_dir)
    logger.info("%d samples (%s, NFE %.0f, %.1f s) written to %s and %s", num, s["sampler"], info["nfe"],
                info["wall_time"], npz_path, png_path)
    return distributed.broadcast_object(info, dist)
