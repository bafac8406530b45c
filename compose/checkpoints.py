"""What a checkpoint means for a model: the stored config merged into today's defaults, rebuilding a ScoreModel,
and the resume policy (which config keys may change between a checkpoint and the run that resumes from it)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from configs.default import config_from_dict
from infra.checkpoint import (
    CLASSIFIER,
    EVALNET,
    SCORE,
    CheckpointError,
    checkpoint_dir,
    list_checkpoints,
    read_checkpoint,
)
from models.classifier import MNISTFeatureNet
from models.guidance import check_same_sde
from models.score import PRECISIONS

from .build import build_classifier, make_score_model

logger = logging.getLogger(__name__)


def eval_data_config(cfg, stored: dict):
    """The config whose data section --mode eval reads: the checkpoint's data set and image size (`stored`), from
    this command's data.source and eval.data_root (or data.root)."""
    data_cfg = config_from_dict(stored)
    data_cfg.data.source, data_cfg.data.root = cfg.data.source, cfg.eval.data_root or cfg.data.root
    return data_cfg


def load_score_model(workdir_or_file: str | os.PathLike, device="cpu", use_ema: bool = True):
    """(ScoreModel in eval mode on `device`, stored config as a plain dict) from a checkpoint file or work dir."""
    return score_model_from(*read_checkpoint(workdir_or_file, SCORE), device, use_ema)


def score_model_from(
    path: Path, ckpt: dict, device="cpu", use_ema: bool = True, precision: str | None = None, compile: bool = False
):
    """(ScoreModel in eval mode on `device`, stored config) from a checkpoint already read (`read_checkpoint`).
    `precision` ("fp32"/"bf16", None: as trained) and `compile` (torch.compile the network) are run-time choices
    of the command using it (`cfg.model.precision`, `cfg.model.compile`), not properties of the weights."""
    cfg_dict = json.loads(ckpt["config"])
    model = make_score_model(config_from_dict(cfg_dict))
    weights = ckpt["ema"] if use_ema else ckpt["model"]
    try:
        model.net.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored config's network: {err}") from None
    logger.info("loaded %s weights from %s (step %d)", "EMA" if use_ema else "raw", path, ckpt["step"])
    model = model.to(torch.device(device)).eval()
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
        model.precision = precision
    if compile:
        model.net = torch.compile(model.net)
    return model, cfg_dict


# ---- Resuming. -------------------------------------------------------------------------------------------------------
# Keys that define the network's weights or the SDE: a resumed run may not change them (n_iters, lr, ... may).
RESUME_MUST_MATCH = ("sde.", "model.", "data.dataset", "data.image_size", "data.num_channels", "data.dim")
RESUME_MAY_CHANGE = ("model.compile", "model.precision")


def flatten_config(cfg: dict, prefix: str = "") -> dict:
    """{"a.b": value} from a nested plain dict (lists and tuples compare equal)."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple | list) else value
    return flat


def resume_config_problems(stored: dict, current: dict) -> tuple[list[str], list[str]]:
    """(differences that forbid resuming, differences that are allowed), each as 'key: old -> new'."""
    old, new = flatten_config(stored), flatten_config(current)
    forbidden, allowed = [], []
    for key in sorted(set(old) | set(new)):
        if key in old and key in new and old[key] == new[key]:
            continue
        line = f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
        must = key.startswith(RESUME_MUST_MATCH) and not key.startswith(RESUME_MAY_CHANGE)
        (forbidden if must and key in old else allowed).append(line)
    return forbidden, allowed


def check_resume_config(stored_json: str, cfg, path) -> None:
    """Refuse (CheckpointError) to resume from `path` with a config that changes the model, SDE or data shape."""
    forbidden, allowed = resume_config_problems(json.loads(stored_json), cfg.to_dict())
    if forbidden:
        raise CheckpointError(
            f"refusing to resume from {path}: the config changes keys that define the model, "
            f"SDE or data: {'; '.join(forbidden)}. Use a new work dir, or restore these values."
        )
    if allowed:
        logger.warning("resuming from %s with changed config keys: %s", path, "; ".join(allowed))


def load_classifier(workdir_or_file: str | os.PathLike, device="cpu", sde=None) -> tuple[nn.Module, dict]:
    """(noisy classifier in eval mode, checkpoint info); with `sde`, refuse a classifier trained on another SDE."""
    path, ckpt = read_checkpoint(workdir_or_file, CLASSIFIER)  # another kind is refused
    if sde is not None:
        check_same_sde(sde.config(), ckpt["sde"])
    net = build_classifier(ckpt["arch"])
    net.load_state_dict(ckpt["model"])
    info = {"path": str(path), "step": int(ckpt["step"]), "sde": ckpt["sde"], "arch": ckpt["arch"]}
    return net.to(torch.device(device)).eval().requires_grad_(False), info


def load_evalnet(workdir_or_file: str | os.PathLike, device="cpu") -> tuple[nn.Module, dict]:
    """(MNISTFeatureNet in eval mode, its stored results: accuracy, data, checkpoint path)."""
    if not str(workdir_or_file):
        raise CheckpointError(
            "no evaluation network given: set eval.evalnet_workdir (train one with --mode train_evalnet)"
        )
    path, ckpt = read_checkpoint(workdir_or_file, EVALNET)  # another kind is refused
    net = MNISTFeatureNet(**ckpt["arch"])
    net.load_state_dict(ckpt["model"])
    info = {**json.loads(ckpt["results"]), "checkpoint": str(path)}
    net.feature_scale = info["feature_scale"]  # evalnet_outputs divides the features by it
    return net.to(torch.device(device)).eval().requires_grad_(False), info


def check_nothing_to_lose(workdir, restart: bool) -> None:
    """Refuse to start from step 0 in a work dir whose checkpoints are all damaged, unless `restart`
    (training.restart): say so loudly, with their names (they are kept either way)."""
    damaged = [p.name for p in list_checkpoints(workdir)]
    if damaged and not restart:
        raise CheckpointError(
            f"no valid checkpoint in {checkpoint_dir(workdir)}: {damaged} are all damaged (kept, "
            f"see the warnings above). Set --config.training.restart=True to train from step 0"
        )
    if damaged:
        logger.warning(
            "every checkpoint in %s is damaged (%s); training.restart=True: starting from step 0",
            checkpoint_dir(workdir),
            damaged,
        )
