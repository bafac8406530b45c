"""Sampling driver: checkpoint -> batches of samples -> PNG, .npz and a JSON line in samples/samples.jsonl.

`run_sampling(cfg, workdir)` is `main.py --mode sample`; `sample_to_disk` does the work and returns the record.
It draws cfg.sampling.num_samples samples in batches, each batch from its own generator seeded by (cfg.seed,
batch index), and writes every finished batch atomically to samples/parts_<sampler>_<key>/, so a killed run
resumes where it stopped and gives the same samples as an uninterrupted one. At the end the parts are merged
into samples/<sampler>_<stamp>.npz and .png (an image grid, or a scatter plot for vector data) and one JSON
line with the sampler, its options, NFE and wall time. Under torchrun the batches are shared out round robin over
the processes and gathered in order (infra/distributed.py): the same samples as one process; rank 0 writes them.

In a notebook: `x, info = sample(model, "dpm_solver", num_samples=16, steps=20, grid="logsnr")`.
The score function is built in ONE place, `build_score_fn`: guidance (models/guidance.py) extends it there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from compose.checkpoints import config_from_dict, score_model_from
from compose.sampling import batch_labels, label_classes, model_shape, sample_batch, sampling_info, with_default_steps
from data.images import save_grid
from infra import distributed
from infra.checkpoint import read_checkpoint
from infra.io import atomic_write_npz
from samplers import check_sampler_options, options_from_config

logger = logging.getLogger(__name__)


# ---- The command-line run: batches on disk, resumable. ------------------------------------------------------------
def run_key(sampling: Mapping, checkpoint: Path, seed: int) -> str:
    """A short hash of everything that determines the samples (parts of another setup are never mixed in)."""
    keys = (
        "sampler",
        "steps",
        "grid",
        "t_min",
        "t_max",
        "num_samples",
        "batch_size",
        "label",
        "class_grid",
        "guidance_scale",
        "classifier_scale",
        "classifier_workdir",
        "use_ema",
    )
    what = {k: sampling[k] for k in keys} | options_from_config(sampling["sampler"], sampling)
    what |= {"checkpoint": str(checkpoint.resolve()), "mtime": checkpoint.stat().st_mtime, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


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
    s = with_default_steps(cfg.sampling.to_dict())  # steps = 0: the sampler's own default
    dist = distributed.setup(cfg)  # under torchrun: batches shared out round robin (one process: all of them)
    device = dist.device
    checkpoint, ckpt = read_checkpoint(cfg.sampling.checkpoint or workdir)
    model, stored = score_model_from(
        checkpoint, ckpt, device, cfg.sampling.use_ema, precision=cfg.model.precision, compile=cfg.model.compile
    )
    del ckpt
    sde, shape = model.sde, model_shape(model, config_from_dict(stored).to_dict())
    options = options_from_config(s["sampler"], s)
    check_sampler_options(
        s["sampler"], sde, steps=s["steps"], grid=s["grid"], t_min=s["t_min"], t_max=s["t_max"] or None, **options
    )
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
            atomic_write_npz(path, **part)
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
    atomic_write_npz(npz_path, samples=x.numpy(), nfe=np.array(info["nfe_per_batch"]))
    if x.ndim == 2:
        save_scatter(x, png_path, f"{s['sampler']}, {num} samples, NFE {info['nfe']:.0f}")
    else:
        if s["class_grid"] and num_classes:  # labels cycle i % C: regroup so that each row is one class
            order = torch.argsort(torch.arange(len(x)) % num_classes, stable=True)
            save_grid(x[order], png_path, nrow=-(-len(x) // num_classes))
        else:
            save_grid(x, png_path, nrow=max(int(len(x) ** 0.5), 1))
    info |= {
        "sde": sde.config(),
        "checkpoint": str(checkpoint),
        "npz": str(npz_path),
        "png": str(png_path),
        "stamp": stamp,
        "resumed_batches": resumed,
        "seed": cfg.seed,
    }
    with open(out_dir / "samples.jsonl", "a") as f:
        f.write(json.dumps(info) + "\n")
    shutil.rmtree(parts_dir)
    logger.info(
        "%d samples (%s, NFE %.0f, %.1f s) written to %s and %s",
        num,
        s["sampler"],
        info["nfe"],
        info["wall_time"],
        npz_path,
        png_path,
    )
    return distributed.broadcast_object(info, dist)
