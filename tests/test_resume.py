"""Exact resume and crash safety of the training loop.

* A CPU run stopped by SIGTERM and resumed is bit-identical (weights, EMA, optimiser, RNG) to an uninterrupted run:
  toy data with class labels (batches, t, noise, label dropout) and a tiny U-Net with dropout on MNIST-like IDX
  files (data position, dequantisation, the global RNG of dropout). Negative controls: resuming without the
  generators' state, or without the global RNG state, gives different weights.
* Training stopped by SIGTERM (main.py, from outside) or SIGINT saves a checkpoint and exits with code 75.
* main.py SIGKILLed half-way through writing a checkpoint leaves the previous checkpoint valid, and resumes from it.
* main.py SIGKILLed at random moments, again and again: every time the newest valid checkpoint loads, and the
  resumed run ends bit-identical to one that was never killed.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import infra.state as state
import training.loop as loop
from configs.toy_gmm import get_config as toy_config
from configs.vp_mnist import get_config as mnist_config
from infra.checkpoint import (
    CheckpointError,
    WorkdirLock,
    checkpoint_path,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from tests import hooks

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # the machine is shared: 2 threads under contention are many times slower than 1


def toy_cfg(n_iters: int = 12):
    cfg = toy_config()
    t = cfg.training
    t.n_iters, t.batch_size, t.warmup, t.log_every, t.checkpoint_every, t.snapshot_every = n_iters, 64, 3, 4, 1000, 0
    cfg.model.hidden, cfg.model.depth, cfg.model.num_classes, t.p_uncond = 32, 2, 4, 0.3
    return cfg


def unet_cfg(root: Path, n_iters: int = 4):
    cfg = mnist_config()
    cfg.data.source, cfg.data.root = "idx", str(root)
    m, t = cfg.model, cfg.training
    m.base_channels, m.channel_mult, m.num_res_blocks, m.attn_resolutions, m.dropout = 4, (1, 2), 1, (), 0.5
    t.n_iters, t.batch_size, t.warmup, t.log_every, t.checkpoint_every, t.snapshot_every = n_iters, 3, 2, 1, 1000, 0
    return cfg


def write_idx(root: Path, n: int = 7) -> Path:
    """MNIST-format train files with n random digits."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name, magic, arr in (
        ("train-images-idx3-ubyte", 0x803, rng.integers(0, 256, (n, 28, 28))),
        ("train-labels-idx1-ubyte", 0x801, rng.integers(0, 10, n)),
    ):
        dims = b"".join(d.to_bytes(4, "big") for d in arr.shape)
        (root / name).write_bytes(magic.to_bytes(4, "big") + dims + arr.astype(np.uint8).tobytes())
    return root


def run_interrupted(cfg, workdir: Path, stop_at: int, monkeypatch, sig: str = "SIGTERM") -> None:
    """Train until a real signal (sent by the test's on_step hook after step `stop_at`), then resume to the end."""
    with pytest.raises(loop.TrainingInterrupted) as stop:
        loop.train(cfg, workdir, on_step=hooks.signal_after(stop_at, sig))
    assert stop.value.code == loop.EXIT_INTERRUPTED == 75
    assert latest_checkpoint(workdir) == checkpoint_path(workdir, stop_at)
    loop.train(cfg, workdir)


def final_state(workdir: Path, step: int) -> dict:
    ckpt = load_checkpoint(checkpoint_path(workdir, step))
    opt = ckpt["optimizer"]["state"]
    return {
        "model": ckpt["model"],
        "ema": ckpt["ema"],
        "rng": ckpt["rng"]["generators"],
        "adam": {f"{i}.{k}": v for i, s in opt.items() for k, v in s.items()},
    }


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_toy_resume_is_bit_identical_and_needs_the_generator_state(tmp_path, monkeypatch):
    cfg = toy_cfg(n_iters=12)
    loop.train(cfg, tmp_path / "straight")
    run_interrupted(cfg, tmp_path / "resumed", 5, monkeypatch, sig="SIGINT")  # Ctrl-C
    straight, resumed = final_state(tmp_path / "straight", 12), final_state(tmp_path / "resumed", 12)
    for part in ("model", "ema", "rng", "adam"):
        assert identical(straight[part], resumed[part]), part
    # Negative control: the same interruption, resumed without restoring any RNG state.
    monkeypatch.setattr(loop, "set_rng_state", lambda *args: None)
    run_interrupted(cfg, tmp_path / "no_rng", 5, monkeypatch)
    assert not identical(straight["model"], final_state(tmp_path / "no_rng", 12)["model"])


def test_unet_dropout_resume_is_bit_identical_and_needs_the_global_rng(tmp_path, monkeypatch):
    cfg = unet_cfg(write_idx(tmp_path / "mnist"), n_iters=4)
    loop.train(cfg, tmp_path / "straight")
    run_interrupted(cfg, tmp_path / "resumed", 2, monkeypatch)
    straight, resumed = final_state(tmp_path / "straight", 4), final_state(tmp_path / "resumed", 4)
    assert identical(straight["model"], resumed["model"]) and identical(straight["ema"], resumed["ema"])
    assert load_checkpoint(checkpoint_path(tmp_path / "resumed", 4))["data"]["epoch"] == 1  # 12 of 7 images read
    # Negative control: generators and data position restored, the global RNG (dropout masks) not.
    monkeypatch.setattr(state, "set_global_rng_state", lambda *args: None)
    run_interrupted(cfg, tmp_path / "no_global", 2, monkeypatch)
    assert not identical(straight["model"], final_state(tmp_path / "no_global", 4)["model"])


# ---- main.py in subprocesses. ----------------------------------------------------------------------------------------
def main_py(workdir: Path, *flags: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start `main.py --mode train` on the toy config (stdout piped, stderr to `log`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "tests/hooks.py",
        "--config=configs/toy_gmm.py",
        "--mode=train",
        f"--workdir={workdir}",
        "--config.training.snapshot_every=0",
        "--config.training.batch_size=32",
        "--config.model.hidden=32",
        *flags,
    ]
    stderr = open(log or os.devnull, "w")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_for(predicate, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_from_outside_saves_and_exits_75(tmp_path):
    """(SIGINT takes the same path; the in-process toy test above stops with a real SIGINT.)"""
    proc = main_py(
        tmp_path / "run",
        "--config.training.n_iters=1000000",
        "--config.training.checkpoint_every=50",
        log=tmp_path / "log",
    )
    wait_for(lambda: latest_checkpoint(tmp_path / "run") is not None, what="a first complete checkpoint")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    log = (tmp_path / "log").read_text()
    assert proc.returncode == 75, log[-3000:]
    assert "training interrupted by SIGTERM" in log and "Run the same command again to resume" in log
    step = load_checkpoint(latest_checkpoint(tmp_path / "run"))["step"]
    assert step >= 50 and f"after step {step}/" in log, log[-3000:]


@pytest.mark.slow
def test_a_second_training_process_on_a_busy_work_dir_is_refused_and_a_kill_frees_it(tmp_path):
    workdir = tmp_path / "run"
    first = main_py(
        workdir,
        "--config.training.n_iters=1000000",
        "--config.training.checkpoint_every=20",
        log=tmp_path / "first.log",
    )
    wait_for(lambda: latest_checkpoint(workdir) is not None, what="a first complete checkpoint")
    second = main_py(workdir, "--config.training.n_iters=1000000", log=tmp_path / "second.log")
    second.communicate(timeout=120)
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 1 and f"work dir {workdir} is in use" in log, log[-2000:]
    assert first.poll() is None  # the first run was not disturbed
    with pytest.raises(CheckpointError, match="another training process holds"):
        WorkdirLock(workdir).__enter__()
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    with WorkdirLock(workdir):  # the kernel released the killed holder's lock: no stale lock file to clean up
        pass


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_previous_checkpoint_and_resume_works(tmp_path, caplog):
    workdir = tmp_path / "run"
    proc = main_py(
        workdir,
        "--config.training.n_iters=1000000",
        "--config.training.checkpoint_every=20",
        env={hooks.SLOW_SAVE_ENV: "60@40"},
        log=tmp_path / "first.log",
    )
    for line in proc.stdout:  # the hook prints once ckpt_000040.pt is half written to its temp file
        if "slow save: ckpt_000040.pt half written" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    folder = workdir / "checkpoints"
    assert not (folder / "ckpt_000040.pt").exists() and list(folder.glob(".ckpt_000040.pt.*.tmp"))
    assert latest_checkpoint(workdir) == checkpoint_path(workdir, 20)
    assert load_checkpoint(checkpoint_path(workdir, 20))["step"] == 20
    # Resume in-process with the same config: continues from step 20, finishes, cleans up the half-written file.
    cfg = toy_config()
    cfg.training.snapshot_every, cfg.training.batch_size, cfg.model.hidden = 0, 32, 32
    cfg.training.n_iters, cfg.training.checkpoint_every = 30, 20
    caplog.set_level(logging.INFO, logger="training.loop")
    loop.train(cfg, workdir)
    assert f"resumed from {checkpoint_path(workdir, 20)} at step 20" in caplog.text
    assert latest_checkpoint(workdir) == checkpoint_path(workdir, 30)
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Three SIGKILLs at seeded random moments after a first checkpoint (during steps or saves, wherever they fall):
    each time the newest valid checkpoint loads and the next run resumes from it; the finished run's weights, EMA
    and optimiser equal an uninterrupted run's. The lr is constant after warm-up, so the length may grow on resume."""
    rng, workdir = random.Random(1234), tmp_path / "run"
    flags = (
        "--config.training.n_iters=1000000",
        "--config.training.checkpoint_every=25",
        "--config.training.lr_decay=constant",
        "--config.training.warmup=10",
    )
    steps_seen = []
    for kill in range(3):
        proc = main_py(workdir, *flags, log=tmp_path / f"run{kill}.log")
        previous = steps_seen[-1] if steps_seen else 0
        # Wait for a COMPLETE checkpoint (file and matching sidecar) past the previous one: a file alone may still
        # lack its sidecar, and a kill then correctly falls back to the one before.
        wait_for(
            lambda previous=previous: checkpoint_step(latest_checkpoint(workdir) or "ckpt_000000.pt") > previous,
            what=f"a complete checkpoint after step {previous}",
        )
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        newest = latest_checkpoint(workdir)
        steps_seen.append(load_checkpoint(newest)["step"])
        assert steps_seen[-1] > previous, steps_seen
    # Finish in-process, a little past the newest checkpoint, and compare with a run that was never killed.
    cfg = toy_config()
    t = cfg.training
    t.snapshot_every, t.batch_size, cfg.model.hidden, t.checkpoint_every = 0, 32, 32, 25
    t.lr_decay, t.warmup, t.n_iters = "constant", 10, steps_seen[-1] + 30
    loop.train(cfg, workdir)
    loop.train(cfg, tmp_path / "straight")
    killed, straight = final_state(workdir, t.n_iters), final_state(tmp_path / "straight", t.n_iters)
    for part in ("model", "ema", "adam"):
        assert identical(killed[part], straight[part]), (part, steps_seen)


@pytest.mark.slow
def test_sigterm_during_the_end_of_run_grid_exits_75_within_seconds_with_the_checkpoint_on_disk(tmp_path):
    """The step's checkpoint is written before its sample grid, and SIGTERM during the grid stops the sampler
    between two of its steps: exit 75 well within a pre-emption's grace period (10 s asserted)."""
    workdir = tmp_path / "run"
    proc = main_py(
        workdir,
        "--config.training.n_iters=20",
        "--config.training.checkpoint_every=20",
        "--config.training.snapshot_every=20",
        "--config.training.snapshot_samples=2000",
        "--config.training.snapshot_steps=100000",  # a grid that would take many minutes
        "--config.sampling.sampler=pc",
        log=tmp_path / "log",
    )
    wait_for(lambda: latest_checkpoint(workdir) is not None, what="the final checkpoint")
    time.sleep(0.5)  # into the grid
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    elapsed = time.monotonic() - start
    log = (tmp_path / "log").read_text()
    assert proc.returncode == 75 and elapsed < 10, (proc.returncode, elapsed, log[-2000:])
    assert "sample grid skipped" in log and latest_checkpoint(workdir) == checkpoint_path(workdir, 20)
    assert not list((workdir / "samples").glob("step_*.png"))


def test_a_work_dir_whose_checkpoints_are_all_damaged_is_not_silently_restarted(tmp_path):
    """Every checkpoint damaged: training refuses to start from step 0 (naming the files, which are kept) unless
    training.restart = True; the config check says the same before any work."""
    from compose.validate import ConfigError, validate_config

    cfg = toy_cfg(n_iters=4)
    cfg.training.checkpoint_every = 2
    loop.train(cfg, tmp_path)
    for path in list_checkpoints(tmp_path):
        path.write_bytes(b"damaged")
    cfg.training.n_iters = 6
    with pytest.raises(ConfigError, match=r"\['ckpt_000002.pt', 'ckpt_000004.pt'\] are all damaged"):
        validate_config(cfg, "train", str(tmp_path))
    with pytest.raises(ConfigError, match="are all damaged"):  # the Python API validates as main.py does
        loop.train(cfg, tmp_path)
    with pytest.raises(CheckpointError, match="training.restart=True to train from step 0"):  # and the loop itself
        loop.train(cfg, tmp_path, validate=False)
    assert [p.read_bytes() for p in list_checkpoints(tmp_path)] == [b"damaged", b"damaged"]
    cfg.training.restart = True
    validate_config(cfg, "train", str(tmp_path))
    loop.train(cfg, tmp_path)
    assert load_checkpoint(checkpoint_path(tmp_path, 6))["step"] == 6
