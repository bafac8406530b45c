"""Bits/dim of a trained model on its images (MNIST, CIFAR-10): probability-flow ODE and discrete bound, by chunks.

`run_likelihood_eval(cfg, workdir)` loads the checkpoint that sampling would use (`cfg.sampling.checkpoint`, or the
newest valid one in `workdir`; EMA weights if `cfg.sampling.use_ema`), takes the first `cfg.eval.num_images`
images of the `cfg.eval.split` split and runs `evaluate_bpd`, which
  * dequantises every image `cfg.eval.num_dequant` times with data.datasets.dequantize_and_scale (the one place
    pixels become model space) and solves the probability-flow ODE with `cfg.eval.num_probes` Hutchinson probes
    (likelihood.log_likelihood_per_probe), converting to bits/dim with likelihood.bits_per_dim;
  * if `cfg.eval.bound`, evaluates the discrete variational bound with the discretised decoder on the pixel-bin
    centres (likelihood.vlb_terms) on `cfg.eval.bound_steps` grid times.
Images are processed in chunks of `cfg.eval.batch_size`; each chunk's results are written atomically (temp file +
os.replace) to <workdir>/eval/likelihood_chunks/, with a fingerprint of the settings, the checkpoint and the
pixels, and every chunk's randomness is seeded from (seed, chunk index): a killed evaluation restarts where it
stopped and gives the same numbers as an uninterrupted one, and under torchrun the ranks share the chunks out
round robin (infra/distributed.py) with the same numbers as one process. Outputs: eval/likelihood.json
(summary with standard errors), eval/per_image.npz (per-image results) and tensorboard scalars under
<workdir>/tensorboard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from compose.build import load_eval_images
from compose.checkpoints import eval_data_config, score_model_from
from compose.validate import check_eval_options
from data.datasets import dequantize_and_scale
from infra import distributed
from infra.checkpoint import checkpoint_step, read_checkpoint, recorded_sha256
from infra.distributed import gather_round_robin
from infra.io import atomic_write_json, atomic_write_npz
from likelihood import (
    bits_per_dim,
    bound_grid,
    check_pixels,
    log_likelihood_per_probe,
    mean_and_stderr,
    probe_stderr,
    vlb_bits_per_dim,
    vlb_terms,
)

logger = logging.getLogger(__name__)

CHUNK_DIR = "likelihood_chunks"
BOUND_TERMS = ("total", "prior", "diffusion", "decoder")


# ---- One chunk. ------------------------------------------------------------------------------------------------------
def _chunk_ode(score_fn, sde, images, opts: dict, gen_cpu, gen_dev, device) -> dict:
    """ODE bits/dim of one chunk: samples [b, num_dequant, num_probes], NFE per draw, wall time."""
    num_dims = images[0].numel()
    bpd, nfes, start = [], [], time.perf_counter()
    for _ in range(opts["num_dequant"]):
        x = dequantize_and_scale(images, generator=gen_cpu).to(device)
        logp, _, nfe = log_likelihood_per_probe(
            score_fn,
            sde,
            x,
            t_min=opts["t_min"],
            rtol=opts["rtol"],
            atol=opts["atol"],
            method=opts["method"],
            divergence=opts["divergence"],
            probe=opts["probe"],
            num_probes=opts["num_probes"],
            generator=gen_dev,
            time_variable=opts["time_variable"],
            options={"order": opts["order"]} if opts["method"] == "exponential" else None,
            state_dtype=opts["state_dtype"],
        )
        bpd.append(bits_per_dim(logp.double().cpu(), num_dims))
        nfes.append(nfe)
    return {
        "ode_bpd_samples": torch.stack(bpd, 1).numpy(),
        "ode_nfe": np.array(nfes),
        "ode_seconds": np.array(time.perf_counter() - start),
    }


def _chunk_bound(score_fn, sde, images, opts: dict, gen_dev, device) -> dict:
    """Variational-bound bits/dim of one chunk, per term [b], and wall time."""
    start = time.perf_counter()
    if opts["bound_decoder"] == "ddpm":  # Ho et al.'s code maps pixels to k / 127.5 - 1
        x0 = (images.to(torch.float32) / 127.5 - 1).to(device)
    else:
        x0 = dequantize_and_scale(images, dequantize=False).to(device)  # pixel-bin centres
    grid = bound_grid(sde, opts["bound_steps"], spacing=opts["bound_spacing"])
    terms = vlb_terms(score_fn, sde, x0, grid, variance=opts["bound_variance"], decoder=opts["bound_decoder"],
                      clip_x0=opts["bound_clip"], generator=gen_dev)  # fmt: skip
    bpd = vlb_bits_per_dim(terms, images[0].numel())
    out = {f"bound_{k}": bpd[k].double().cpu().numpy() for k in BOUND_TERMS}
    out["bound_seconds"] = np.array(time.perf_counter() - start)
    return out


def _fingerprint(opts: dict, tag: str, images: torch.Tensor) -> str:
    """What a chunk's results depend on: settings, model tag and the pixels themselves."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
    return json.dumps({"opts": opts, "tag": tag, "pixels": digest, "shape": list(images.shape)}, sort_keys=True)


def _load_chunk(path: Path, fingerprint: str) -> dict | None:
    """A finished chunk's arrays, or None if absent, unreadable or computed with other settings."""
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        return None
    return arrays if str(arrays.pop("fingerprint", "")) == fingerprint else None


# ---- The evaluation. -------------------------------------------------------------------------------------------------
def evaluate_bpd(
    score_fn,
    sde,
    images,
    out_dir=None,
    tag: str = "",
    seed: int = 0,
    device="cpu",
    progress: bool = False,
    dist=None,
    **options,
) -> dict:
    """Bits/dim of 8-bit images [N, C, H, W] by the probability-flow ODE and the variational bound, in resumable
    chunks under `out_dir` (None: in memory). `options` as in DEFAULT_OPTIONS. Under torchrun (`dist`, a
    infra.distributed.Dist) each rank does the chunks it owns (round robin) and every rank gets all results.
    Returns the summary with standard errors and "per_image" arrays."""
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; valid: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    images = check_pixels(images).cpu()
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be [N, C, H, W] with N > 0, got {tuple(images.shape)}")
    check_eval_options(sde, opts)
    chunk_dir = None if out_dir is None else Path(out_dir) / CHUNK_DIR
    if chunk_dir is not None:
        chunk_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, images.shape[0], opts["batch_size"])
    chunks = []
    for c, i in enumerate(_progress(starts, progress and (dist is None or dist.is_main))):
        if dist is not None and not dist.owns(c):  # another rank's chunk: its seed depends on c only
            continue
        chunk = images[i : i + opts["batch_size"]]
        fingerprint = _fingerprint(opts, tag, chunk)
        path = None if chunk_dir is None else chunk_dir / f"chunk_{c:05d}.npz"
        result = None if path is None else _load_chunk(path, fingerprint)
        if result is None:
            result = _run_chunk(score_fn, sde, chunk, opts, seed, c, device)
            if path is not None:
                atomic_write_npz(path, **{**result, "fingerprint": np.array(fingerprint)})
        else:
            logger.info("chunk %d already done (%s); skipping it", c, path)
        chunks.append(result)
    if dist is not None and dist.enabled:
        chunks = gather_round_robin(chunks, dist)
    return _summarise(chunks, opts, images)


def _run_chunk(score_fn, sde, chunk, opts, seed, c, device) -> dict:
    """ODE (and bound) results of chunk c, with its randomness seeded from (seed, c) alone."""
    device = torch.device(device)
    gen_cpu = torch.Generator().manual_seed(seed * 1_000_003 + c)
    gen_dev = torch.Generator(device=device).manual_seed(seed * 1_000_003 + c + 500_000)
    result = _chunk_ode(score_fn, sde, chunk, opts, gen_cpu, gen_dev, device)
    if opts["bound"]:
        result.update(_chunk_bound(score_fn, sde, chunk, opts, gen_dev, device))
    return result


def _summarise(chunks: list[dict], opts: dict, images) -> dict:
    """Means with standard errors over images (and over probes/draws for the ODE), NFE and wall time."""
    samples = np.concatenate([c["ode_bpd_samples"] for c in chunks])  # [N, num_dequant, num_probes]
    per_image = {"ode_bpd": samples.mean((1, 2)), "ode_bpd_samples": samples}
    nfe = np.concatenate([c["ode_nfe"] for c in chunks])
    mean, stderr = mean_and_stderr(torch.from_numpy(per_image["ode_bpd"]))
    summary = {
        "num_images": int(images.shape[0]),
        "num_dims": int(images[0].numel()),
        **opts,
        "ode_bpd": mean,
        "ode_bpd_stderr": stderr,
        "ode_bpd_probe_stderr": probe_stderr(torch.from_numpy(samples)),
        "ode_nfe_mean": float(nfe.mean()),
        "ode_seconds": float(sum(c["ode_seconds"] for c in chunks)),
    }
    if not math.isfinite(summary["ode_bpd_probe_stderr"]):  # written as null in the JSON: say why
        summary["ode_bpd_probe_stderr_reason"] = (
            "one probe and one dequantisation draw per image leave no spread to estimate it from; "
            "set eval.num_probes or eval.num_dequant >= 2"
        )
    if stderr == 0.0 and summary["num_images"] == 1:
        summary["ode_bpd_stderr_reason"] = "one image: no spread over images"
    if opts["bound"]:
        for k in BOUND_TERMS:
            per_image[f"bound_{k}"] = np.concatenate([c[f"bound_{k}"] for c in chunks])
            summary[f"bound_bpd_{k}"], summary[f"bound_bpd_{k}_stderr"] = mean_and_stderr(
                torch.from_numpy(per_image[f"bound_{k}"])
            )
        summary["bound_seconds"] = float(sum(c["bound_seconds"] for c in chunks))
    summary["per_image"] = per_image
    return summary


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc="bits/dim chunks")


DEFAULT_OPTIONS = {
    "batch_size": 64,
    "num_dequant": 1,
    "num_probes": 1,
    "probe": "rademacher",
    "divergence": "hutchinson",
    "rtol": 1e-4,
    "atol": 1e-4,
    "method": "exponential",
    "order": 4,
    "time_variable": "auto",
    "state_dtype": "float32",
    "t_min": 1e-5,
    "bound": True,
    "bound_steps": 1000,
    "bound_variance": "posterior",
    "bound_spacing": "uniform",
    "bound_decoder": "discretized",
    "bound_clip": False,
}


# ---- The driver. -----------------------------------------------------------------------------------------------------
def _load_model(cfg, workdir: str, device):
    """(score_fn, sde, tag, step, stored config) of the checkpoint sampling would use; weights frozen (only x needs
    gradients)."""

    path, ckpt = read_checkpoint(cfg.sampling.checkpoint or workdir)
    model, stored = score_model_from(
        path, ckpt, device, use_ema=cfg.sampling.use_ema, precision=cfg.model.precision, compile=cfg.model.compile
    )
    del ckpt
    model.requires_grad_(False)
    tag = f"{path.name}:{recorded_sha256(path)}:{'ema' if cfg.sampling.use_ema else 'raw'}"
    return model.score_fn(), model.sde, tag, checkpoint_step(path), stored


def _load_images(cfg, stored: dict) -> torch.Tensor:
    """The first cfg.eval.num_images images of the chosen split of the checkpoint's image data set, uint8
    [N, C, H, W]."""
    images, description = load_eval_images(eval_data_config(cfg, stored), cfg.eval.split)
    if len(images) < cfg.eval.num_images:
        logger.warning("only %d images available (%s); evaluating all of them", len(images), description)
    return images[: cfg.eval.num_images]


def _write_outputs(results: dict, out_dir: Path, workdir: str, step: int) -> None:
    """eval/likelihood.json, eval/per_image.npz (both atomic) and tensorboard scalars."""
    summary = {k: v for k, v in results.items() if k != "per_image"}
    atomic_write_json(out_dir / "likelihood.json", summary)
    atomic_write_npz(out_dir / "per_image.npz", **results["per_image"])
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(os.path.join(workdir, "tensorboard")) as writer:
        for key in (
            "ode_bpd",
            "ode_nfe_mean",
            "bound_bpd_total",
            "bound_bpd_prior",
            "bound_bpd_diffusion",
            "bound_bpd_decoder",
        ):
            if key in summary:
                writer.add_scalar(f"eval/{key}", summary[key], step)


def run_likelihood_eval(cfg, workdir: str) -> dict:
    """Bits/dim of the checkpoint in `workdir` on its image data by the probability-flow ODE and the variational
    bound; writes eval/likelihood.json, eval/per_image.npz and tensorboard scalars; resumes a killed run. Under torchrun
    the chunks are shared out round robin and rank 0 writes the outputs."""

    e = cfg.eval
    options = {k: e[k] for k in DEFAULT_OPTIONS}
    dist = distributed.setup(cfg)
    device = dist.device
    score_fn, sde, tag, step, stored = _load_model(cfg, workdir, device)
    check_eval_options(sde, {**DEFAULT_OPTIONS, **options})  # fail before loading data or doing work
    images = _load_images(cfg, stored)
    out_dir = Path(workdir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = evaluate_bpd(
        score_fn,
        sde,
        images,
        out_dir=out_dir,
        tag=tag,
        seed=cfg.seed,
        device=device,
        progress=True,
        dist=dist,
        **options,
    )
    results["checkpoint"], results["step"] = tag, step
    if dist.is_main:
        _write_outputs(results, out_dir, workdir, step)
        logger.info(
            "bits/dim (ODE) %.4f +- %.4f over %d images; bound %s",
            results["ode_bpd"],
            results["ode_bpd_stderr"],
            results["num_images"],
            results.get("bound_bpd_total", "not computed"),
        )
    distributed.barrier(dist)  # the outputs exist before any rank returns
    return {k: v for k, v in results.items() if k != "per_image"}
