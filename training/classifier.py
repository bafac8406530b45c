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

from compose.build import build_classifier, classifier_arch, data_num_classes, make_sde_from_config, make_train_data
from compose.validate import validate_config
from infra.checkpoint import CLASSIFIER, WorkdirLock, latest_checkpoint, load_latest_checkpoint, save_checkpoint
from infra.state import rng_state, seed_everything, set_rng_state
from models.guidance import check_same_sde, classifier_log_probs
from training.steps import advance_schedule, run_steps

logger = logging.getLogger(__name__)

KIND = CLASSIFIER


def train_classifier(cfg, workdir: str | os.PathLike, validate: bool = True) -> nn.Module:
    """Train p_t(c | x_t) on cfg's data and SDE in `workdir` (resuming from its latest checkpoint); eval mode.
    Its checkpoints go to <workdir>/checkpoints_classifier/, beside (never over) a score model's. `validate`: as
    in `training.loop.train`."""
    if validate:
        validate_config(cfg, "train_classifier", str(workdir))
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

    def checkpoint(step: int):
        return save_checkpoint(
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

    # ---- Steps: perturb with the SDE, cross-entropy (the shared step loop: bad steps, checkpoints, SIGTERM). ---
    def step_fn(step: int) -> bool:
        x0, y = data.batch(c.batch_size, generators["data"])
        x0, y = x0.to(device), y.to(device)
        t = c.t_min + (sde.T - c.t_min) * torch.rand(x0.shape[0], generator=generators["train"], device=device)
        noise = torch.randn(x0.shape, generator=generators["train"], device=device)
        log_probs = classifier_log_probs(net, sde, sde.perturb(x0, t, noise), t)
        loss = F.nll_loss(log_probs, y)
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            optimizer.step()
        else:
            logger.warning("classifier step %d: non-finite loss; update skipped", step + 1)
        advance_schedule(schedule, ok)
        last.update(loss=loss.item(), accuracy=(log_probs.argmax(1) == y).float().mean().item())
        return ok

    def after_step(done: int, stop) -> dict | None:
        if done % c.log_every == 0 or done == c.n_iters:
            logger.info("classifier step %d: loss %.4f, batch accuracy %.3f", done, last["loss"], last["accuracy"])
            return {"loss": f"{last['loss']:.3f}", "acc": f"{last['accuracy']:.3f}"}
        return None

    last = {}
    run_steps(
        step_fn,
        checkpoint,
        start=start,
        n_iters=c.n_iters,
        checkpoint_every=c.checkpoint_every,
        max_bad_steps=cfg.training.max_bad_steps,
        desc="classifier",
        what="classifier steps",
        last_good=lambda: latest_checkpoint(workdir, KIND),
        after_step=after_step,
    )
    return net.eval()
