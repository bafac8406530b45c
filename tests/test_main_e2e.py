"""End-to-end `python main.py --mode train`: the toy GMM config (MLP) and a tiny U-Net on a handful of MNIST-format
digits train in seconds and leave config.json, verified checkpoints, tensorboard scalars and images, and sample
PNGs in the work dir. Both runs go in parallel (each main.py start costs a few seconds of imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infra.checkpoint import checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow  # subprocesses of main.py / torchrun

REPO = Path(__file__).resolve().parents[1]
SCALARS = {"train/loss", "train/lr", "train/grad_norm", "train/bad_steps"}


def write_idx(root: Path, n: int = 8) -> Path:
    """MNIST-format train files with n random digits."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for name, magic, arr in (
        ("train-images-idx3-ubyte", 0x803, rng.integers(0, 256, (n, 28, 28))),
        ("train-labels-idx1-ubyte", 0x801, rng.integers(0, 10, n)),
    ):
        dims = b"".join(d.to_bytes(4, "big") for d in arr.shape)
        (root / name).write_bytes(magic.to_bytes(4, "big") + dims + arr.astype(np.uint8).tobytes())
    return root


def tensorboard_tags(workdir: Path) -> tuple[set[str], set[str], list[float]]:
    """(scalar tags, image tags, logged loss values) of the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    return set(tags["scalars"]), set(tags["images"]), [e.value for e in events.Scalars("train/loss")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start both trainings, wait, and return {name: (workdir, returncode, stdout, stderr)}."""
    tmp = tmp_path_factory.mktemp("e2e")
    common = ["--mode=train", "--config.training.log_every=10", "--config.training.snapshot_steps=10"]
    commands = {
        "toy": [
            "--config=configs/toy_gmm.py",
            "--config.training.n_iters=60",
            "--config.training.checkpoint_every=30",
            "--config.training.snapshot_every=30",
            "--config.training.snapshot_samples=256",
        ],
        "mnist": [
            "--config=configs/vp_mnist.py",
            "--config.data.source=idx",
            f"--config.data.root={write_idx(tmp)}",
            "--config.model.base_channels=8",
            "--config.model.channel_mult=(1,2)",
            "--config.model.num_res_blocks=1",
            "--config.model.attn_resolutions=(14,)",
            "--config.training.batch_size=4",
            "--config.training.n_iters=3",
            "--config.training.checkpoint_every=2",
            "--config.training.snapshot_every=3",
            "--config.training.snapshot_samples=4",
        ],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "main.py", *flags, *common, f"--workdir={tmp / name}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, flags in commands.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = (tmp / name, proc.returncode, stdout, stderr)
    return out


def test_toy_run_writes_everything(runs):
    workdir, code, stdout, stderr = runs["toy"]
    assert code == 0, stderr[-3000:]
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["training"]["n_iters"] == 60 and cfg["data"]["dataset"] == "gmm"
    assert "n_iters: 60" in stdout  # the resolved config is printed
    assert [p.name for p in list_checkpoints(workdir)] == ["ckpt_000030.pt", "ckpt_000060.pt"]
    assert latest_checkpoint(workdir) == checkpoint_path(workdir, 60)
    ckpt = load_checkpoint(checkpoint_path(workdir, 60))
    assert ckpt["step"] == 60 and ckpt["bad_steps"] == 0 and json.loads(ckpt["config"]) == cfg
    scalars, images, losses = tensorboard_tags(workdir)
    assert SCALARS <= scalars and "samples" in images and len(losses) == 6
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]  # the DSM loss falls within 60 steps
    for step in (30, 60):
        with Image.open(workdir / "samples" / f"step_{step:06d}.png") as png:
            assert png.size[0] > 100 and png.size[1] > 100
    assert "it/s" in stderr  # the tqdm progress bar


def test_tiny_unet_on_mnist_files_writes_everything(runs):
    workdir, code, stdout, stderr = runs["mnist"]
    assert code == 0, stderr[-3000:]
    assert "IDX files" in stderr  # the data source is reported
    assert [p.name for p in list_checkpoints(workdir)] == ["ckpt_000002.pt", "ckpt_000003.pt"]
    ckpt = load_checkpoint(checkpoint_path(workdir, 3))
    assert ckpt["data"] == {"epoch": 1, "index": 4, "seed": 0, "n": 8}  # 3 batches of 4 from 8 images
    scalars, images, _ = tensorboard_tags(workdir)
    assert SCALARS <= scalars and "samples" in images
    with Image.open(workdir / "samples" / "step_000003.png") as png:
        assert png.mode == "L" and png.size == (2 + 2 * 30, 2 + 2 * 30)  # 4 samples, 2 per row, 2-pixel padding
