"""One work dir, every mode: the score model, the noisy classifier and the evaluation net each keep to their own
checkpoint folder, so no mode deletes or shadows another's checkpoints (a score model's checkpoints 10, 20, 30 stay
byte-identical while a classifier and an evaluation net are trained in the same work dir at the same steps)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from compose.checkpoints import load_score_model
from infra.checkpoint import (
    CKPT_DIR,
    CheckpointError,
    WorkdirLock,
    checkpoint_dir,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)


def _write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x803 if array.ndim == 3 else 0x801
    path.write_bytes(
        magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    )


def _digests(workdir) -> dict[str, str]:
    folder = checkpoint_dir(workdir)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_every_mode_in_one_workdir_keeps_the_score_checkpoints(tmp_path):
    from compose.checkpoints import load_classifier, load_evalnet
    from configs.toy_cond import get_config
    from evaluation.sample import run_sampling
    from training.classifier import KIND as CLF
    from training.classifier import train_classifier
    from training.evalnet import KIND as EVALNET
    from training.evalnet import train_evalnet
    from training.loop import train

    workdir = tmp_path / "run"
    cfg = get_config()
    t = cfg.training
    t.n_iters, t.checkpoint_every, t.snapshot_every, t.log_every, t.warmup = 30, 10, 0, 10, 1
    train(cfg, workdir)
    before = _digests(workdir)
    assert sorted(before) == [f"ckpt_0000{s}.pt{x}" for s in (10, 20, 30) for x in ("", ".sha256")]

    # The classifier at the same step numbers (10, 20, 30, keep 3), then the evaluation net at step 30.
    c = cfg.classifier
    c.n_iters, c.checkpoint_every, c.log_every, c.batch_size = 30, 10, 10, 64
    train_classifier(cfg, workdir)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    cfg.data.source, cfg.data.root, cfg.eval.data_root = "idx", str(tmp_path), str(tmp_path)
    c.evalnet_iters, c.evalnet_batch_size = 30, 8
    results = train_evalnet(cfg, workdir)
    train_evalnet(cfg, workdir)  # a rerun replaces its own checkpoint at the same step instead of keeping the old

    assert _digests(workdir) == before  # byte-identical, none deleted, none added
    assert [p.name for p in list_checkpoints(workdir, CLF)] == ["ckpt_000010.pt", "ckpt_000020.pt", "ckpt_000030.pt"]
    assert [p.name for p in list_checkpoints(workdir, EVALNET)] == ["ckpt_000030.pt"]
    assert json.loads((workdir / "evalnet.json").read_text())["checkpoint"] == results["checkpoint"]

    # Each mode finds its own checkpoint again; a file of another kind is refused by name.
    model, stored = load_score_model(workdir)
    assert stored["training"]["n_iters"] == 30
    assert load_checkpoint(list_checkpoints(workdir)[-1])["kind"] == "score_model"
    classifier, info = load_classifier(workdir, sde=model.sde)
    assert info["step"] == 30 and info["path"].endswith("checkpoints_classifier/ckpt_000030.pt")
    _, evalnet_info = load_evalnet(workdir)
    assert evalnet_info["checkpoint"].endswith("checkpoints_evalnet/ckpt_000030.pt")
    with pytest.raises(CheckpointError, match="holds a noisy_classifier checkpoint, not a score_model one"):
        load_score_model(info["path"])
    with pytest.raises(CheckpointError, match="holds a score_model checkpoint, not a noisy_classifier one"):
        load_classifier(list_checkpoints(workdir)[-1])

    # Sampling the score model in that work dir, with classifier guidance from the same work dir.
    s = cfg.sampling
    s.sampler, s.steps, s.num_samples, s.batch_size = "ddim", 5, 16, 16
    s.classifier_scale, s.classifier_workdir = 1.0, str(workdir)
    run_sampling(cfg, str(workdir))
    assert _digests(workdir) == before
    assert list((workdir / "samples").glob("*.npz"))


def test_older_layout_classifier_is_found_and_never_taken_for_a_score_model(tmp_path):
    """Work dirs written before kinds had folders hold classifier checkpoints in checkpoints/: the classifier still
    finds its own there, and score-model loading and resuming skip it (it is never deleted)."""
    state = {"step": 5, "model": {"w": torch.zeros(2)}, "config": "{}", "sde": {"name": "vp"}, "arch": {}}
    save_checkpoint(tmp_path, 4, {**state, "step": 4, "ema": {"w": torch.ones(2)}})  # a score checkpoint
    legacy = checkpoint_dir(tmp_path) / "ckpt_000005.pt"
    data = {"format": "scoresde-checkpoint-v1", **state, "kind": "noisy_classifier"}
    torch.save(data, legacy)
    digest = hashlib.sha256(legacy.read_bytes()).hexdigest()
    legacy.with_name(legacy.name + ".sha256").write_text(f"{digest}  {legacy.name}\n")

    path, ckpt = load_latest_checkpoint(tmp_path)  # the score model's resume skips the newer classifier file
    assert path.name == "ckpt_000004.pt" and ckpt["step"] == 4
    path, ckpt = load_latest_checkpoint(tmp_path, "noisy_classifier")
    assert path == legacy and ckpt["step"] == 5
    assert (tmp_path / CKPT_DIR / "ckpt_000005.pt").is_file()


def test_each_kind_has_its_own_training_lock(tmp_path):
    with WorkdirLock(tmp_path), WorkdirLock(tmp_path, kind="noisy_classifier"):  # side by side: allowed
        with pytest.raises(CheckpointError, match="in use"):
            WorkdirLock(tmp_path, kind="noisy_classifier").__enter__()
