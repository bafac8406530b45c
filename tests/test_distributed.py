"""Data-parallel training and sharded evaluation under torchrun: 2 CPU processes, gloo on 127.0.0.1.

* `torchrun --nproc_per_node=2 main.py --mode train` trains like one process: with the same global batch, weights
  and EMA after every step equal a single-process run's within 1e-5 (they differ by ~1e-8, the order of float
  additions); a single process given only the per-rank batch differs by far more (negative control).
* A SIGTERM to rank 1 alone stops both ranks after the same step, rank 0 saves, both exit 75; a single process
  resumes that checkpoint and ends where the uninterrupted single process ends.
* Two processes resume a single-process checkpoint; a NaN loss on rank 1 only is skipped by both ranks (no hang).
* Sharded sampling (main.py's driver) and sharded bits/dim equal the single-process results exactly (every batch
  and chunk is seeded by its global index).

This file is also the worker script of the second launch (`python tests/test_distributed.py worker ...`). Both
launches run at once (each costs ~10 s of imports on the shared 2-core machine); the single-process references run
in this process meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # subprocesses of main.py / torchrun

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run by torchrun as the worker script
    sys.path.insert(0, str(REPO))

import training.loop as loop  # noqa: E402
from configs.toy_gmm import get_config as toy_config  # noqa: E402
from infra import distributed  # noqa: E402
from infra.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint  # noqa: E402
from tests import hooks  # noqa: E402

# Labels with dropout exercise every sharded draw: batch, label dropout, t, noise. Weights change visibly per step.
OVERRIDES = {
    "model.hidden": 32,
    "model.depth": 2,
    "model.num_classes": 4,
    "training.p_uncond": 0.3,
    "training.batch_size": 32,
    "training.n_iters": 8,
    "training.warmup": 2,
    "training.log_every": 2,
    "training.checkpoint_every": 1,
    "training.keep_checkpoints": 20,
    "training.snapshot_every": 0,
}
ATOL = 1e-5  # observed differences between 1 and 2 processes: ~1e-8
RESUME_STEP, NAN_STEP = 4, 7  # the worker resumes the single-process step-4 checkpoint; rank 1's loss is NaN at 7
SAMPLING = {"sampling.num_samples": 10, "sampling.batch_size": 4, "sampling.steps": 5}  # 3 batches: 2 + 1 per rank
LIKELIHOOD = {"batch_size": 2, "num_dequant": 2, "num_probes": 2, "rtol": 1e-3, "atol": 1e-3, "bound_steps": 20}


def toy_cfg(**changes):
    cfg = toy_config()
    for key, value in {**OVERRIDES, **changes}.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


def likelihood_problem():
    """(score_fn, sde, 5 images of 4x4 pixels): 3 chunks of 2, so rank 0 evaluates chunks 0 and 2, rank 1 chunk 1."""
    from sde import VPSDE

    sde, std = VPSDE(), 0.5

    def score_fn(x, t):  # exact score of N(0, std^2 I) data
        alpha, sigma = sde.marginal(t)
        return -x / (alpha**2 * std**2 + sigma**2).reshape(-1, *[1] * (x.ndim - 1))

    images = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return score_fn, sde, images


# ---- The worker (under torchrun). ------------------------------------------------------------------------------------
def worker(workdir: str, out: str) -> None:
    """Resume training from the single-process checkpoint in `workdir` with a NaN loss on rank 1 at NAN_STEP, sample
    from the result, then evaluate bits/dim; rank 0 writes the evaluation and the samples' path to `out`."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = toy_cfg()
    dist = distributed.setup(cfg)
    if dist.rank == 1:
        real, calls = loop.compute_loss, []

        def nan_on_this_rank(model, sde, x0, y, cfg, draws):
            calls.append(None)
            loss = real(model, sde, x0, y, cfg, draws)
            return loss * float("nan") if RESUME_STEP + len(calls) == NAN_STEP else loss

        loop.compute_loss = nan_on_this_rank
    loop.train(cfg, workdir)

    from evaluation.likelihood_eval import evaluate_bpd
    from evaluation.sample import sample_to_disk

    sampled = sample_to_disk(toy_cfg(**SAMPLING), workdir)

    score_fn, sde, images = likelihood_problem()
    result = evaluate_bpd(score_fn, sde, images, out_dir=Path(out).parent / "eval", dist=dist, **LIKELIHOOD)
    order = distributed.gather_round_robin([f"item {i}" for i in range(5) if dist.owns(i)], dist)
    if dist.is_main:
        np.savez(out, **result.pop("per_image"))
        record = {"summary": result, "order": order, "samples": sampled["npz"]}
        Path(out).with_suffix(".json").write_text(json.dumps(record, default=float))
    distributed.finish()  # as main.py ends a torchrun worker


# ---- Launching. ------------------------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def torchrun(port: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m torch.distributed.run --nproc_per_node=2` on 127.0.0.1 (one intra-op thread per process)."""
    base = {k: v for k, v in os.environ.items() if k not in (hooks.SIGNAL_ENV, hooks.SLOW_SAVE_ENV)}
    env = {**base, "OMP_NUM_THREADS": "1", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        *args,
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(workdir: Path, step: int) -> dict:
    ckpt = load_checkpoint(checkpoint_path(workdir, step))
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()}, **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Single-process reference (8 steps) in-process; then both torchrun launches at once:
    "two": main.py from scratch, SIGTERM to rank 1 after step 5;  "resume": the worker, from the reference's step 4.
    Returns {name: (workdir, returncode, stdout, stderr)} plus "one" (the reference's work dir) and "tmp"."""
    tmp = tmp_path_factory.mktemp("dist")
    loop.train(toy_cfg(), tmp / "one")
    (tmp / "resume" / "checkpoints").mkdir(parents=True)
    start = checkpoint_path(tmp / "one", RESUME_STEP)
    for file in (start, Path(f"{start}.sha256")):
        shutil.copy(file, tmp / "resume" / "checkpoints")
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    port_two, port_resume = free_ports(2)
    procs = {
        "two": torchrun(
            port_two,
            "tests/hooks.py",
            "--config=configs/toy_gmm.py",
            "--mode=train",
            f"--workdir={tmp / 'two'}",
            *flags,
            env={hooks.SIGNAL_ENV: "5:SIGTERM:1"},
        ),
        "resume": torchrun(
            port_resume, "tests/test_distributed.py", "worker", str(tmp / "resume"), str(tmp / "worker.npz")
        ),
    }
    out = {"one": tmp / "one", "tmp": tmp}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        out[name] = (tmp / name, proc.returncode, stdout, stderr)
    return out


# ---- Training. -------------------------------------------------------------------------------------------------------
def test_two_processes_train_like_one_and_stop_together(runs):
    workdir, code, stdout, stderr = runs["two"]
    # SIGTERM reached rank 1 only; both ranks stopped after step 5 and exited 75 (torchrun itself reports failure).
    assert code != 0 and re.search(r"exitcode\s*:\s*75", stderr), stderr[-3000:]
    assert "training interrupted by a signal to another rank after step 5/8" in stderr
    assert "rank 1: stopping after step 5 with the other ranks" in stderr
    assert [p.name for p in list_checkpoints(workdir)] == [f"ckpt_{s:06d}.pt" for s in range(1, 6)]
    # Rank 0 alone prints the config and writes tensorboard.
    assert stdout.count("config (") == 1 and len(list((workdir / "tensorboard").glob("events.*"))) == 1
    for step in range(1, 6):
        assert max_diff(weights(workdir, step), weights(runs["one"], step)) < ATOL, step
        ours, theirs = (load_checkpoint(checkpoint_path(w, step))["rng"]["generators"] for w in (workdir, runs["one"]))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # the shared generators drew the same
    assert len(load_checkpoint(checkpoint_path(workdir, 5))["rng_ranks"]) == 2
    # Negative control: one process with only the per-rank batch (16) is far off after 5 steps.
    loop.train(toy_cfg(**{"training.batch_size": 16, "training.n_iters": 5}), runs["tmp"] / "half")
    assert max_diff(weights(runs["tmp"] / "half", 5), weights(runs["one"], 5)) > 100 * ATOL


def test_a_single_process_resumes_the_two_process_checkpoint(runs, caplog):
    workdir = runs["two"][0]
    caplog.set_level(logging.INFO, logger="training.loop")
    loop.train(toy_cfg(), workdir)
    assert f"resumed from {checkpoint_path(workdir, 5)} at step 5" in caplog.text
    assert max_diff(weights(workdir, 8), weights(runs["one"], 8)) < ATOL


def test_two_processes_resume_a_single_process_checkpoint_and_skip_a_nan_on_one_rank(runs):
    workdir, code, _, stderr = runs["resume"]
    assert code == 0, stderr[-3000:]
    assert f"step {NAN_STEP}: non-finite loss; update skipped" in stderr  # logged by rank 0, whose loss was finite
    assert max_diff(weights(workdir, 6), weights(runs["one"], 6)) < ATOL  # resumed from the single process's step 4
    before, after = (load_checkpoint(checkpoint_path(workdir, s))["model"] for s in (NAN_STEP - 1, NAN_STEP))
    assert all(torch.equal(before[k], after[k]) for k in before)  # skipped on both ranks
    final = load_checkpoint(checkpoint_path(workdir, 8))
    assert final["bad_steps"] == 1 and all(torch.isfinite(v).all() for v in final["model"].values())


# ---- Sharded evaluation. ---------------------------------------------------------------------------------------------
def test_sharded_sampling_equals_single_process_sampling(runs):
    from evaluation.sample import sample_to_disk

    assert runs["resume"][1] == 0, runs["resume"][3][-3000:]
    cfg = toy_cfg(**SAMPLING)
    cfg.sampling.checkpoint = str(checkpoint_path(runs["resume"][0], 8))
    single = sample_to_disk(cfg, str(runs["tmp"] / "sample_one"))
    sharded = json.loads((runs["tmp"] / "worker.json").read_text())["samples"]
    with np.load(single["npz"]) as a, np.load(sharded) as b:
        assert a["samples"].shape == (10, 2) and np.isfinite(a["samples"]).all()
        np.testing.assert_array_equal(a["samples"], b["samples"])
        np.testing.assert_array_equal(a["nfe"], b["nfe"])


def test_sharded_bits_per_dim_equal_the_single_process_evaluation(runs):
    from evaluation.likelihood_eval import evaluate_bpd

    assert runs["resume"][1] == 0, runs["resume"][3][-3000:]
    score_fn, sde, images = likelihood_problem()
    single = evaluate_bpd(score_fn, sde, images, **LIKELIHOOD)
    stored = json.loads((runs["tmp"] / "worker.json").read_text())
    assert stored["order"] == [f"item {i}" for i in range(5)]
    with np.load(runs["tmp"] / "worker.npz") as sharded:
        assert sharded.files and set(sharded.files) == set(single["per_image"])
        for key, value in single["per_image"].items():
            np.testing.assert_array_equal(sharded[key], value)
    for key in ("ode_bpd", "ode_bpd_stderr", "bound_bpd_total", "ode_nfe_mean"):
        assert stored["summary"][key] == single[key], key
    assert len(list((runs["tmp"] / "eval" / "likelihood_chunks").glob("chunk_*.npz"))) == 3  # by both ranks


# ---- Checks without launching. ---------------------------------------------------------------------------------------
def test_the_global_batch_must_divide_and_unsharded_modes_are_refused(monkeypatch, tmp_path):
    from compose.validate import ConfigError, validate_config

    assert distributed.Dist(rank=1, world_size=2).shard(32) == slice(16, 32)
    with pytest.raises(ValueError, match="33 is not divisible by the number of processes 2"):
        distributed.Dist(rank=0, world_size=2).shard(33)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = toy_cfg(**{"training.batch_size": 33})
    with pytest.raises(ConfigError, match=r"training.batch_size = 33 is the GLOBAL batch .* processes \(2\)"):
        validate_config(cfg, "train", str(tmp_path / "w"))
    with pytest.raises(ConfigError) as err:  # sampling does not use the training batch (it fails for lack of a model)
        validate_config(cfg, "sample", str(tmp_path / "w"))
    assert "GLOBAL batch" not in str(err.value)
    with pytest.raises(ConfigError, match="--mode train_classifier does not run distributed"):
        validate_config(toy_cfg(), "train_classifier", str(tmp_path / "w"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    validate_config(cfg, "train", str(tmp_path / "w"))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("model.precision", "bf16", r"model.precision = 'bf16' is for GPUs, but device = 'cpu'"),
        ("distributed.backend", "nccl", r"distributed.backend = 'nccl' needs device = 'cuda'"),
        ("distributed.backend", "mpi", r"distributed.backend = 'mpi' is unknown"),
    ],
)
def test_distributed_and_precision_options_are_checked(key, value, match, tmp_path):
    from compose.validate import ConfigError, validate_config

    cfg = toy_cfg()
    section, name = key.split(".")
    with cfg.unlocked():
        cfg[section][name] = value
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg, "train", str(tmp_path))


def test_single_process_helpers_are_the_identity():
    dist = distributed.Dist()
    assert dist.shard(7) == slice(0, 7) and dist.owns(5) and not dist.enabled and dist.is_main
    assert distributed.any_rank(True, dist) and not distributed.any_rank(False, dist)
    assert distributed.reduce_loss(torch.tensor(2.5), dist) == (2.5, True)
    assert distributed.reduce_loss(torch.tensor(float("inf")), dist)[1] is False
    assert distributed.gather_round_robin([1, 2], dist) == [1, 2] and distributed.broadcast_object(3, dist) == 3
    assert distributed.rank_seed(17, 0) == 17 and len({distributed.rank_seed(17, r) for r in range(4)}) == 4
    with distributed.NullWriter() as writer:
        writer.add_scalar("x", 1.0, 0)
    assert distributed.backend_for("", torch.device("cpu")) == "gloo"
    assert distributed.backend_for("", torch.device("cuda", 0)) == "nccl"


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(*sys.argv[2:4])


def test_torch_compile_trains_like_eager_and_saves_plain_weights(tmp_path, monkeypatch):
    """model.compile = True wraps the network in torch.compile: the weights after a few steps equal the eager run's
    to float rounding, and the checkpoint holds the unwrapped module's keys, so eager runs load it. The test traces
    with dynamo and the aot_eager backend (seconds; the default inductor backend generates C++ and takes ~1.5 min
    here; it gave the same weights to 1.2e-7 in a manual run of the toy config)."""
    calls = []
    real_compile = torch.compile

    def compile_aot_eager(module, **kwargs):
        calls.append(module)
        return real_compile(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    changes = {"training.n_iters": 3, "training.checkpoint_every": 3}
    loop.train(toy_cfg(**changes), tmp_path / "eager")
    loop.train(toy_cfg(**changes, **{"model.compile": True}), tmp_path / "compiled")
    assert len(calls) == 1  # only the compiled run
    eager, compiled = weights(tmp_path / "eager", 3), weights(tmp_path / "compiled", 3)
    assert not any("_orig_mod" in key for key in compiled)
    assert max_diff(eager, compiled) < ATOL
