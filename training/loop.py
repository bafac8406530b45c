"""The training driver: DSM training of a score model with Adam(W), warm-up, clipping, EMA, crash-safe checkpoints
and exact resume (Song et al. 2021, App. D recipe; loop layout after EDM's training_loop.py).

`train(cfg, workdir)` runs from main.py or from Python (returns the EMA ScoreModel). Every random draw of training
(batches, dequantisation, t, noise, label dropout) comes from generators owned by the loop; dropout uses the global
torch RNG; all of them, plus the data position, go into each checkpoint, so an interrupted and resumed CPU run is
bit-identical to an uninterrupted one. The steps run in the step loop all trainers share (training/steps.py:
non-finite steps skipped, checkpoints, SIGTERM/SIGINT finish the step, save, and exit with EXIT_INTERRUPTED, 75).

Under torchrun the same loop trains with DDP (infra/distributed.py): training.batch_size is the global batch,
every rank draws it with the shared generators and keeps its slice, so N processes give the single-process
weights up to float rounding; rank 0 alone logs, shows progress, draws sample grids and writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch

from compose.build import data_shape, make_score_model, make_sde_from_config, make_train_data
from compose.checkpoints import check_nothing_to_lose, check_resume_config
from compose.sampling import SamplingStopped, sample_images
from compose.validate import validate_config
from data.images import save_grid
from infra import distributed
from infra.checkpoint import (
    WorkdirLock,
    latest_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from infra.io import atomic_write_bytes
from infra.state import rng_state, seed_everything, set_rng_state
from losses.dsm import dsm_loss, sample_time
from losses.importance import sample_importance_time
from models.score import ScoreModel
from training.ema import EMA
from training.steps import EXIT_INTERRUPTED, TrainingDiverged, TrainingInterrupted, advance_schedule, run_steps

logger = logging.getLogger(__name__)

__all__ = ["EXIT_INTERRUPTED", "TrainingDiverged", "TrainingInterrupted", "train"]


def train(cfg, workdir: str | os.PathLike, on_step=None, validate: bool = True) -> ScoreModel:
    """Train the score model described by `cfg` in `workdir` (resuming from its latest checkpoint); return the
    EMA model in eval mode. One training process (one torchrun job) per work dir: a second is refused.
    `on_step(step, rank)`, if given, is called on every rank after each completed step (and its checkpoint).
    `validate`: check cfg, the work dir and the data first (`compose.validate.validate_config`: a ConfigError
    listing every problem, nothing written); main.py has already done so."""
    if validate:
        validate_config(cfg, "train", str(workdir))
    dist = distributed.setup(cfg)  # rank 0 of 1 without torchrun
    with WorkdirLock(workdir, enabled=dist.is_main):  # rank 0 writes every file
        return _train(cfg, workdir, dist, on_step)


def _train(cfg, workdir: str | os.PathLike, dist, on_step) -> ScoreModel:
    tc = cfg.training
    # ---- Set-up: device, seeds and data, before anything is written but the lock. ------------------------------
    device, shard = dist.device, dist.shard(tc.batch_size)  # this rank's slice of every global batch
    seed_everything(cfg.seed)  # the same on every rank: identical initial weights
    data = make_train_data(cfg)
    # Shared by all ranks, so each draws the same global batch: the union of the slices is the single-process batch.
    generators = {
        "data": torch.Generator().manual_seed(cfg.seed),  # CPU: batches, dequantisation, toy draws
        "train": torch.Generator(device=device).manual_seed(cfg.seed + 1),
    }  # t, noise, label dropout

    # ---- Model, EMA, optimiser, learning-rate schedule. ---------------------------------------------------------
    sde = make_sde_from_config(cfg)
    model = make_score_model(cfg, sde).to(device).train()
    net = model.net  # the unwrapped network: saved, averaged, clipped; DDP and torch.compile wrap it below
    ema = EMA(net, tc.ema_decay)
    ema_model = ScoreModel(ema.net, sde, cfg.model.precision).eval()
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, tc) / tc.lr)
    if dist.rank > 0:
        seed_everything(distributed.rank_seed(cfg.seed, dist.rank))  # each rank its own dropout masks
    logger.info("network: %s parameters", f"{sum(p.numel() for p in net.parameters()):,}")

    # ---- Resume from the newest checkpoint that verifies and loads (refused if the model or SDE changed). ------
    # Rank 0 reads it and sends it to the others (they need no shared file system).
    start_step, bad_total = 0, 0
    ckpt_path, ckpt = distributed.broadcast_object(load_latest_checkpoint(workdir) if dist.is_main else None, dist)
    if ckpt is None:
        check_nothing_to_lose(workdir, tc.restart)
    if ckpt is not None:
        check_resume_config(ckpt["config"], cfg, ckpt_path)
        net.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        start_step = int(ckpt["step"])
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if hasattr(data, "load_state_dict"):
                data.load_state_dict(ckpt["data"])
            set_rng_state(ckpt["rng"], generators)  # shared generators; rank 0's global RNGs
            bad_total = int(ckpt["bad_steps"])
            distributed.restore_rank_rng(ckpt, cfg.seed, dist, start_step)
            logger.info("resumed from %s at step %d", ckpt_path, start_step)
        else:  # an imported checkpoint (compose/import_score_sde.py): weights and step only
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", tc.lr)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_at(k, tc) / tc.lr, start_step - 1)
            logger.info("continuing %s from step %d with fresh Adam moments (imported weights)", ckpt_path, start_step)
        del ckpt
    model.net = distributed.wrap_ddp(net, dist)  # gradients averaged over ranks in backward (one process: net)
    if cfg.model.compile:
        model.net = torch.compile(model.net)

    # ---- Work dir (rank 0): config.json, tensorboard. ----------------------------------------------------------
    workdir = Path(workdir)
    cfg_json = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    if dist.is_main:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(workdir / "config.json", (cfg_json + "\n").encode())
        print(f"config ({workdir / 'config.json'}):\n{cfg}", flush=True)
    from torch.utils.tensorboard import SummaryWriter

    def checkpoint(step: int):
        ranks_rng = distributed.gather_objects(rng_state({}), dist) if dist.enabled else None  # every rank calls
        if not dist.is_main:
            return None
        state = {
            "step": step,
            "config": cfg_json,
            "sde": sde.config(),
            "model": net.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(generators),
            "data": data.state_dict() if hasattr(data, "state_dict") else {},
            "bad_steps": bad_total_box[0],
        }
        if ranks_rng is not None:  # each rank's global RNGs (dropout), for an exact resume with as many ranks
            state["rng_ranks"] = ranks_rng
        return save_checkpoint(workdir, step, state, keep=tc.keep_checkpoints)

    # ---- Training steps (the shared step loop: bad steps, checkpoints, graceful stop). --------------------------
    window, bad_total_box = [], [bad_total]
    writer = SummaryWriter(str(workdir / "tensorboard")) if dist.is_main else distributed.NullWriter()
    last = {"grad_norm": torch.tensor(math.nan)}

    def step_fn(step: int) -> bool:
        # The global batch, its labels (with dropout to the null label), t and noise, drawn alike on every rank;
        # this rank keeps its slice and computes the loss on it.
        x0, y = data.batch(tc.batch_size, generators["data"])
        x0 = x0.to(device)
        y = drop_labels(y, cfg.model.num_classes, tc.p_uncond, generators["train"], device)
        draws = draw_time_and_noise(sde, x0, cfg, generators["train"])
        x0, y, draws = x0[shard], None if y is None else y[shard], distributed.take(draws, shard)
        loss = compute_loss(model, sde, x0, y, cfg, draws).mean()
        # Update, skipped on every rank when the loss or the gradient is not finite on any rank (under DDP the
        # gradients, hence their norm, are already averaged over ranks).
        optimizer.zero_grad(set_to_none=True)
        grad_norm = torch.tensor(math.nan)
        global_loss, loss_ok = distributed.reduce_loss(loss, dist)
        if loss_ok:
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip or math.inf)
        ok = loss_ok and not distributed.any_rank(not torch.isfinite(grad_norm), dist)
        if ok:
            optimizer.step()
            ema.update(net, step)
            window.append(global_loss)
        else:
            bad_total_box[0] += 1
            what = "gradient" if loss_ok else "loss"
            logger.warning("step %d: non-finite %s; update skipped (%d in total)", step + 1, what, bad_total_box[0])
            writer.add_scalar("train/bad_steps", bad_total_box[0], step + 1)
        advance_schedule(scheduler, ok)
        last["grad_norm"] = grad_norm
        return ok

    def after_step(done: int, stop) -> dict | None:
        # Logging, then the sample grid (after the step's checkpoint; skipped on a stop signal).
        if done % tc.log_every == 0 or done == tc.n_iters:
            mean_loss = sum(window) / max(len(window), 1)
            lr = scheduler.get_last_lr()[0]
            log_scalars(writer, done, mean_loss, lr, last["grad_norm"].item(), bad_total_box[0])
            window.clear()
            postfix = {"loss": f"{mean_loss:.4f}", "lr": f"{lr:.2e}"}
        else:
            postfix = None
        if dist.is_main and tc.snapshot_every and (done % tc.snapshot_every == 0 or done == tc.n_iters):
            save_snapshot(ema_model, cfg, workdir, done, writer, should_stop=lambda: stop.signum is not None)
        return postfix

    try:
        with writer:
            run_steps(
                step_fn,
                checkpoint,
                start=start_step,
                n_iters=tc.n_iters,
                checkpoint_every=tc.checkpoint_every,
                max_bad_steps=tc.max_bad_steps,
                desc="train",
                last_good=lambda: latest_checkpoint(workdir),
                after_step=after_step,
                on_step=on_step,
                dist=dist,
            )
    finally:  # however training ends (done, interrupted, diverged): the DDP wrapper goes while the group exists
        model.net = net
        distributed.release_ddp()
    bad_total = bad_total_box[0]
    distributed.barrier(dist)  # the last checkpoint is on disk before any rank returns
    logger.info("training finished at step %d (%d non-finite steps skipped)", max(start_step, tc.n_iters), bad_total)
    return ema_model


# ---- Helpers. ----------------------------------------------------------------------------------------------------
def lr_at(step: int, tc) -> float:
    """Learning rate after `step` steps: linear warm-up to lr, then constant or cosine decay to lr_min."""
    if tc.warmup > 0 and step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    if tc.lr_decay == "constant":
        return tc.lr
    progress = min(max(step - tc.warmup, 0) / max(tc.n_iters - tc.warmup, 1), 1.0)
    return tc.lr_min + (tc.lr - tc.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def drop_labels(y, num_classes: int, p_uncond: float, generator: torch.Generator, device):
    """Labels for a conditional model, each replaced by the null label num_classes with probability p_uncond
    (classifier-free guidance training, Ho & Salimans 2021); None for unconditional models."""
    if num_classes == 0:
        return None
    if y is None:
        raise ValueError("model.num_classes > 0 but the data set has no labels")
    y = y.to(device)
    drop = torch.rand(y.shape, generator=generator, device=device) < p_uncond
    return torch.where(drop, torch.full_like(y, num_classes), y)


def draw_time_and_noise(sde, x0, cfg, generator) -> tuple:
    """(t [B], noise [B, *D], loss weight [B] or None) for a batch x0: t drawn as cfg.training.loss says (in
    training.loss.loss_fn's order), or by importance sampling with its weights."""
    tc = cfg.training
    if tc.importance_sampling:
        t, weight = sample_importance_time(sde, x0.shape[0], tc.t_min, generator)
        t, weight = t.to(x0), weight.to(x0)
    else:
        t = sample_time(sde, x0.shape[0], tc.loss, tc.t_min, cfg.sde.N, generator, x0.device, tc.p_mean, tc.p_std).to(
            x0.dtype
        )
        weight = None
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return t, noise, weight


def compute_loss(model, sde, x0, y, cfg, draws):
    """Per-example DSM loss [b] (Song et al. 2021, Eq. 7) at the given draws (t, noise, weight or None). With
    importance sampling the weight already holds lambda(t) = g^2 / sigma^2 over the density of t, so it multiplies
    the plain eps-MSE ("sigma2" weighting): the expectation is the uniform-time likelihood-weighted loss."""
    t, noise, weight = draws
    if weight is not None:
        return dsm_loss(model, sde, x0, t, noise, y, "sigma2") * weight
    return dsm_loss(model, sde, x0, t, noise, y, cfg.training.weighting)


def log_scalars(writer, step: int, loss: float, lr: float, grad_norm: float, bad_steps: int) -> None:
    """Tensorboard scalars of one logging interval."""
    writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("train/lr", lr, step)
    writer.add_scalar("train/grad_norm", grad_norm, step)
    writer.add_scalar("train/bad_steps", bad_steps, step)


@torch.no_grad()
def draw_snapshot(ema_model: ScoreModel, cfg, step: int, should_stop=None) -> torch.Tensor:
    """cfg.training.snapshot_samples samples of the EMA model (the configured sampler with snapshot_steps steps;
    conditional models cycle through the classes with sampling.guidance_scale), from a generator of their own and
    inside fork_rng, so the training randomness is untouched."""

    n = cfg.training.snapshot_samples
    sampling = {
        **cfg.sampling.to_dict(),
        "steps": cfg.training.snapshot_steps,
        "batch_size": n,
        "class_grid": cfg.model.num_classes > 0,
        "classifier_scale": 0.0,
    }
    device = next(ema_model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        x, _ = sample_images(
            ema_model, ema_model.sde, sampling, n, generator, device, data_shape(cfg), False, should_stop
        )
    return x


def save_snapshot(ema_model: ScoreModel, cfg, workdir: Path, step: int, writer, should_stop=None) -> None:
    """Samples of the EMA model: samples/step_XXXXXX.png (an image grid, or a scatter for vectors) and tensorboard.
    Skipped (and logged) when `should_stop()` becomes true during it, e.g. on SIGTERM."""

    if should_stop is not None and should_stop():
        logger.warning("step %d: sample grid skipped (stopping)", step)
        return
    try:
        x = draw_snapshot(ema_model, cfg, step, should_stop).cpu()
    except SamplingStopped as err:
        logger.warning("step %d: sample grid skipped (%s: stopping)", step, err)
        return
    path = workdir / "samples" / f"step_{step:06d}.png"
    if x.ndim == 2:
        fig = scatter_figure(x, f"EMA samples, step {step}")
        fig.savefig(path, dpi=100)
        writer.add_figure("samples", fig, step)  # closes the figure
    else:
        nrow = max(int(math.sqrt(x.shape[0])), 1)
        grid = save_grid(x, path, nrow)
        writer.add_image("samples", grid, step)
    logger.info("step %d: sample grid written to %s", step, path)


def scatter_figure(x: torch.Tensor, title: str):
    """A matplotlib scatter plot of 2-D samples (the first two coordinates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5)
    ax.set_title(title)
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig
