"""Train the noise-conditional classifier p_t(c | x_t) used by classifier guidance (Song et al. 2021, App. I.1;
Dhariwal & Nichol 2021, Sec. 4).

`python main.py --config configs/cond_mnist.py --mode train_classifier --workdir runs/clf_mnist` trains on the
same SDE's perturbed data as the score model: x_t = sde.perturb(x_0, t, noise) with t ~ U[t_min, 1], cross-entropy
on the labels. The classifier sees x_t with the score networks' preconditioning (`models.guidance.
classifier_log_probs`). Checkpoints use the crash-safe functions of infra/checkpoint.py and store the network's
constructor arguments and the SDE config, so `load_classifier` rebuilds it and refuses an SDE mismatch.
"""

from __future__ import annotations

import json
import logging
import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from compose.build import build_classifier, classifier_arch, data_num_classes, make_sde_from_config, make_train_data
from infra.checkpoint import CLASSIFIER, WorkdirLock, load_latest_checkpoint, save_checkpoint
from infra.state import GracefulStop, rng_state, seed_everything, set_rng_state
from models.guidance import check_same_sde, classifier_log_probs
from training.loop import EXIT_INTERRUPTED, TrainingDiverged, TrainingInterrupted

logger = logging.getLogger(__name__)

KIND = CLASSIFIER


def train_classifier(cfg, workdir: str | os.PathLike) -> nn.Module:
    """Train p_t(c | x_t) on cfg's data and SDE in `workdir` (resuming from its latest checkpoint); eval mode.
    Its checkpoints go to <workdir>/checkpoints_classifier/, beside (never over) a score model's."""
    with WorkdirLock(workdir, kind=KIND):
        return _train_classifier(cfg, workdir)


def _train_classifier(cfg, workdir: str | os.PathLike) -> nn.Module:
    c = cfg.classifier
    # ---- Set-up: device, seeds, data, SDE, network, optimiser. -------------------------------------------------
    device = torch.device(cfg.device)
    seed_everything(cfg.seed)
    data = make_train_data(cfg)
    generators = {
        "data": torch.Generator().manual_seed(cfg.seed + 10),
        "train": torch.Generator(device=device).manual_seed(cfg.seed + 11),
    }
    sde = make_sde_from_config(cfg)
    arch = classifier_arch(cfg, data_num_classes(data))
    net = build_classifier(arch).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=c.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / c.n_iters)))
    logger.info("noisy classifier %s: %s parameters", arch["name"], f"{sum(p.numel() for p in net.parameters()):,}")

    # ---- Resume (refused if the stored SDE differs). ------------------------------------------------------------
    start = 0
    path, ckpt = load_latest_checkpoint(workdir, KIND)
    if ckpt is not None:
        check_same_sde(sde.config(), ckpt["sde"])
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        if hasattr(data, "load_state_dict"):
            data.load_state_dict(ckpt["data"])
        set_rng_state(ckpt["rng"], generators)
        start = int(ckpt["step"])
        logger.info("resumed the classifier from %s at step %d", path, start)
    cfg_json = json.dumps(cfg.to_dict(), sort_keys=True)

    def checkpoint(step: int) -> None:
        save_checkpoint(
            workdir,
            step,
            kind=KIND,
            state={
                "step": step,
                "config": cfg_json,
                "sde": sde.config(),
                "arch": arch,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "rng": rng_state(generators),
                "data": data.state_dict() if hasattr(data, "state_dict") else {},
            },
        )

    # ---- Steps: perturb with the SDE, cross-entropy; non-finite steps skipped; SIGTERM saves and exits 75. ----
    bar = tqdm(range(start, c.n_iters), initial=start, total=c.n_iters, desc="classifier", dynamic_ncols=True)
    bad_in_row, max_bad = 0, cfg.training.max_bad_steps
    with GracefulStop() as stop, bar:
        for step in bar:
            x0, y = data.batch(c.batch_size, generators["data"])
            x0, y = x0.to(device), y.to(device)
            t = c.t_min + (sde.T - c.t_min) * torch.rand(x0.shape[0], generator=generators["train"], device=device)
            noise = torch.randn(x0.shape, generator=generators["train"], device=device)
            log_probs = classifier_log_probs(net, sde, sde.perturb(x0, t, noise), t)
            loss = F.nll_loss(log_probs, y)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                optimizer.step()
                bad_in_row = 0
            else:
                bad_in_row += 1
                logger.warning(
                    "classifier step %d: non-finite loss; update skipped (%d in a row)", step + 1, bad_in_row
                )
                if bad_in_row >= max_bad:
                    raise TrainingDiverged(
                        f"{bad_in_row} consecutive classifier steps with a non-finite loss "
                        f"(training.max_bad_steps={max_bad}); the last good checkpoint is kept"
                    )
            schedule.step()
            done = step + 1
            if done % c.log_every == 0 or done == c.n_iters:
                accuracy = (log_probs.argmax(1) == y).float().mean().item()
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
                logger.info("classifier step %d: loss %.4f, batch accuracy %.3f", done, loss.item(), accuracy)
            if done % c.checkpoint_every == 0 or done == c.n_iters or stop.signum is not None:
                checkpoint(done)
            if stop.signum is not None:
                logger.warning(
                    "classifier training interrupted by %s after step %d; checkpoint saved; rerun to "
                    "resume (exit code %d)",
                    stop.name,
                    done,
                    EXIT_INTERRUPTED,
                )
                raise TrainingInterrupted(EXIT_INTERRUPTED)
    return net.eval()
