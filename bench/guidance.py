"""Benchmark: the MNIST evaluation network, and sample quality against guidance scale (docs/guidance.md).

    nice -n 10 python bench/guidance.py --test-root /work/shared/data/mnist --evalnet-workdir runs/evalnet
    nice -n 10 python bench/guidance.py --test-root /work/shared/data/mnist --evalnet-workdir runs/evalnet \\
        --workdir runs/cond_mnist --scales 0,1,2,3,5 --num-samples 500 --sampler ddim --steps 50

Part 1 trains `MNISTFeatureNet` on the offline real digits (unless --evalnet-workdir already holds one), reports
its accuracy on the real test set, and calibrates FID/KID on known sets of the sample count (real digits, noisy
digits, a single digit class). Part 2 (with --workdir, a class-conditional checkpoint) draws unconditional
samples and class-cycling samples for every classifier-free guidance scale (and, with --classifier-workdir, every
classifier-guidance scale; with --intervals / --rescales also each scale limited to a noise-level interval / with
rescaled guidance) and reports FID, KID, accuracy and the class histogram. An unconditional --workdir
with --classifier-workdir benchmarks classifier guidance alone (Song et al. 2021's class-conditional sampling).
Results: <out>/guidance_bench.json, .md (table) and .png (plot). Run with OMP_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from compose.checkpoints import (
    load_evalnet,  # noqa: E402
    load_score_model,  # noqa: E402
)
from compose.features import real_reference  # noqa: E402
from configs.default import get_default_config  # noqa: E402
from evaluation.quality import draw_samples, quality_of  # noqa: E402
from infra.checkpoint import EVALNET, latest_checkpoint  # noqa: E402
from training.evalnet import train_evalnet  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test-root", required=True, help="folder with the real MNIST test IDX files (t10k-*)")
    p.add_argument("--evalnet-workdir", default="runs/evalnet", help="evaluation net work dir (trained if empty)")
    p.add_argument("--evalnet-iters", type=int, default=None, help="override classifier.evalnet_iters")
    p.add_argument("--workdir", default="", help="class-conditional score model work dir (part 2)")
    p.add_argument("--classifier-workdir", default="", help="noisy classifier work dir (classifier guidance)")
    p.add_argument("--scales", default="0,1,2,3,5", help="classifier-free guidance scales w")
    p.add_argument("--classifier-scales", default="1,3", help="classifier-guidance scales (with --classifier-workdir)")
    p.add_argument(
        "--intervals",
        default="",
        help="guidance intervals lo:hi of the noise level sigma/alpha, comma-separated: each CFG scale also runs "
        "limited to each (Kynkaanniemi et al. 2024)",
    )
    p.add_argument("--rescales", default="", help="rescaled-guidance phi values: each CFG scale also runs with each")
    p.add_argument("--num-samples", type=int, default=500, help="samples per setting")
    p.add_argument("--num-real", type=int, default=10000, help="real test digits as the FID/KID reference")
    p.add_argument("--sampler", default="ddim", help="sampler name (samplers.SAMPLERS)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument("--eta", type=float, default=None, help="DDIM / DPM-Solver++ stochasticity (default: config's)")
    p.add_argument("--grid", default=None, help="time grid (default: the config's sampling.grid)")
    p.add_argument("--batch-size", type=int, default=100, help="samples per batch")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--out", default="runs/bench_guidance", help="output folder")
    return p.parse_args()


def make_config(args):
    cfg = get_default_config()
    cfg.eval.data_root, cfg.eval.num_real = args.test_root, args.num_real
    cfg.eval.evalnet_workdir, cfg.eval.num_samples = args.evalnet_workdir, args.num_samples
    if args.evalnet_iters:
        cfg.classifier.evalnet_iters = args.evalnet_iters
    s = cfg.sampling
    s.sampler, s.steps, s.batch_size, s.num_samples = args.sampler, args.steps, args.batch_size, args.num_samples
    if args.eta is not None:
        s.eta = args.eta
    if args.grid is not None:
        s.grid = args.grid
    if args.seed is not None:
        cfg.seed = args.seed
    return cfg


def part_evalnet(cfg, args) -> dict:
    """Train (if needed) the evaluation net; its accuracy on the real test set."""
    start = time.perf_counter()
    trained = latest_checkpoint(args.evalnet_workdir, EVALNET) is None  # an evaluation net's, not a score model's
    if trained:
        train_evalnet(cfg, args.evalnet_workdir)
    net, info = load_evalnet(args.evalnet_workdir)
    reference = real_reference(cfg, net)
    return {
        "net": net,
        "reference": reference,
        "trained_now": trained,
        "seconds": time.perf_counter() - start,
        "test_accuracy": reference["accuracy"],
        "num_test": len(reference["labels"]),
        "train_data": info.get("train"),
        "steps": info.get("steps"),
        "checkpoint": info["checkpoint"],
    }


def part_calibration(cfg, args, net, reference) -> list[dict]:
    """What the metrics say about known image sets of the sample count: real training digits (the floor), the
    same digits with Gaussian pixel noise, and a mode-collapsed set (one digit class only)."""
    import numpy as np

    from compose.features import evalnet_outputs, pixels_to_evalnet_input
    from data.mnist import load_mnist
    from evaluation.quality import sample_metrics

    images, labels, _ = load_mnist(cfg.data.source, cfg.data.root, "train", progress=False)
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(images), min(args.num_samples, len(images)), replace=False)
    ones = rng.choice(np.flatnonzero(labels == 1), min(args.num_samples, int((labels == 1).sum())), replace=False)
    x = pixels_to_evalnet_input(images[pick])
    g = torch.Generator().manual_seed(cfg.seed)
    sets = {
        "real training digits": (x, labels[pick]),
        "real + noise (std 0.2)": (x + 0.2 * torch.randn(x.shape, generator=g), labels[pick]),
        "real, digit 1 only": (pixels_to_evalnet_input(images[ones]), labels[ones]),
    }
    rows = []
    for name, (images_x, images_y) in sets.items():
        feats, preds = evalnet_outputs(net, images_x)
        rows.append(
            {
                "setting": name,
                **sample_metrics(
                    feats, reference["feats"], preds, images_y, cfg.eval.kid_subsets, cfg.eval.kid_subset_size
                ),
            }
        )
    return rows


def part_guidance(cfg, args, net, reference) -> list[dict]:
    """Rows of the table: real digits, unconditional, then every guidance setting."""
    model, _ = load_score_model(args.workdir, "cpu", use_ema=True)
    if not model.num_classes and not args.classifier_workdir:
        raise SystemExit(
            f"{args.workdir} holds an unconditional model; part 2 needs a class-conditional one, or "
            f"--classifier-workdir for classifier guidance of the unconditional model"
        )
    base, e, n = cfg.sampling.to_dict(), cfg.eval, args.num_samples
    labels = torch.arange(n) % 10  # MNIST's digits, cycling (the classifier's classes for an unconditional model)
    rows = []
    settings = [("unconditional", {"label": -1, "classifier_scale": 0.0}, None)]
    if model.num_classes:  # classifier-free guidance needs the conditional network
        scales = [float(w) for w in args.scales.split(",")]
        settings += [(f"CFG w={w:g}", {"guidance_scale": w}, labels) for w in scales]
        guided = [w for w in scales if w != 1.0]  # w = 1 is the conditional score, whatever the interval
        for pair in filter(None, args.intervals.split(",")):
            lo, hi = (float(v) for v in pair.split(":"))
            limits = {"guidance_sigma_lo": lo, "guidance_sigma_hi": hi}
            settings += [(f"CFG w={w:g} in ({lo:g}, {hi:g}]", {"guidance_scale": w, **limits}, labels) for w in guided]
        for phi in (float(v) for v in filter(None, args.rescales.split(","))):
            settings += [(f"CFG w={w:g} rescaled {phi:g}", {"guidance_scale": w, "guidance_rescale": phi}, labels)
                         for w in guided]  # fmt: skip
    if args.classifier_workdir:
        settings += [
            (
                f"classifier lambda={c:g}",
                {"guidance_scale": 1.0, "classifier_scale": c, "classifier_workdir": args.classifier_workdir},
                labels,
            )
            for c in map(float, args.classifier_scales.split(","))
        ]
    for name, overrides, setting_labels in settings:
        start = time.perf_counter()
        x, nfe = draw_samples(model, {**base, **overrides}, n, setting_labels, cfg.seed, "cpu")
        row = {
            "setting": name,
            **quality_of(net, x, reference, setting_labels, e),
            "nfe": nfe,
            "seconds": time.perf_counter() - start,
            **overrides,
        }
        rows.append(row)
        print(
            f"{name}: FID {row['fid']:.2f}, KID {row['kid']:.4f}, acc {row.get('accuracy', float('nan')):.3f}, "
            f"{row['seconds']:.0f} s",
            flush=True,
        )
    return rows


def write_report(out: Path, summary: dict, rows: list[dict]) -> None:
    """JSON, a markdown table and a plot of FID / accuracy against the CFG scale."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "guidance_bench.json").write_text(json.dumps({**summary, "rows": rows}, indent=2, default=str))
    lines = [
        "| setting | FID | KID (x1e3) | accuracy | KL(hist, uniform) | NFE | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "-"
        lines.append(
            f"| {r['setting']} | {r['fid']:.2f} | {1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f} | {acc} | "
            f"{r['kl_to_uniform']:.3f} | {r.get('nfe', '-')} | {r.get('seconds', 0):.0f} |"
        )
    (out / "guidance_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    cfg_rows = [r for r in rows if r["setting"].startswith("CFG")]
    if cfg_rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series = {}  # plain CFG, and each guidance interval / rescale: FID and accuracy against w
        for r in cfg_rows:
            variant = r["setting"].split(" ", 2)[2] if r["setting"].count(" ") > 1 else "guided"
            series.setdefault(variant, []).append(r)
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        for variant, runs in series.items():
            w = [r["guidance_scale"] for r in runs]
            ax[0].plot(w, [r["fid"] for r in runs], "o-", label=variant)
            ax[1].plot(w, [r["accuracy"] for r in runs], "o-", label=variant)
        for r, style in zip([rows[0], *[r for r in rows if r["setting"] == "unconditional"]], ("--", ":")):
            ax[0].axhline(r["fid"], ls=style, c="gray", label=r["setting"])
        ax[0].set(xlabel="guidance scale w", ylabel="FID (evaluation-net features)")
        ax[0].legend()
        ax[1].set(xlabel="guidance scale w", ylabel="accuracy of conditional samples", ylim=(0, 1.02))
        fig.tight_layout()
        fig.savefig(out / "guidance_bench.png", dpi=110)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = make_config(args)
    start = time.perf_counter()
    ev = part_evalnet(cfg, args)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} torch threads, torch {torch.__version__}",
        "command": " ".join(sys.argv),
        "evalnet": {k: v for k, v in ev.items() if k not in ("net", "reference")},
    }
    print(
        f"evaluation net: test accuracy {ev['test_accuracy']:.4f} on {ev['num_test']} real test digits "
        f"({'trained' if ev['trained_now'] else 'loaded'} in {ev['seconds']:.0f} s)",
        flush=True,
    )
    rows = part_calibration(cfg, args, ev["net"], ev["reference"])
    if args.workdir:
        rows += part_guidance(cfg, args, ev["net"], ev["reference"])
    summary["total_seconds"] = time.perf_counter() - start
    write_report(Path(args.out), summary, rows)


if __name__ == "__main__":
    main()
