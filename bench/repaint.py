"""Benchmark: RePaint (samplers/repaint.py) against plain replacement, on an exact conditional and on MNIST digits.
The tables are in docs/guidance.md ("RePaint").

    OMP_NUM_THREADS=1 nice python bench/repaint.py
    OMP_NUM_THREADS=1 nice python bench/repaint.py --checkpoint runs/vp_mnist --evalnet runs/evalnet \\
        --test-root /path/to/mnist --num 64

Part 1 (always): x = (x_1, x_2) ~ N(0, [[1, 0.95], [0.95, 1]]) with its exact score on every path; x_1 = 2 known,
so x_2 | x_1 ~ N(1.9, 0.0975). For 60 and 250 levels and jump_n_sample 1 (replacement), 2, 5, 10, 20 (jump_length
10), it reports the error of the imputed mean (with its standard error) and the variance over the exact one, 4,000
samples, seed 0. Part 2 (with --checkpoint): the top half of the first --num real test digits known, the bottom half
imputed by replacement (DDIM eta = 1, `models.guidance.inpaint`) and by RePaint at equal levels; the MNIST
evaluation network's accuracy on the completed digits against their true labels, and a PNG (rows: truth, the known
half, replacement, RePaint). Results: <out>/repaint_toy.{json,md}, <out>/repaint_mnist.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from data.toy import GaussianMixture  # noqa: E402
from models.guidance import inpaint  # noqa: E402
from samplers import SAMPLERS, count_nfe, repaint_sample, time_grid  # noqa: E402
from sde import SDES, make_sde  # noqa: E402

RHO, KNOWN = 0.95, 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="MNIST score model work dir (part 2)")
    p.add_argument("--evalnet", default="", help="MNIST evaluation network work dir (part 2)")
    p.add_argument("--test-root", default="", help="folder with the real MNIST test IDX files (part 2)")
    p.add_argument("--num", type=int, default=64, help="test digits to inpaint (part 2)")
    p.add_argument("--levels", type=int, default=250, help="grid levels (part 2)")
    p.add_argument("--jump-n-sample", type=int, default=10, help="RePaint's resamplings (part 2)")
    p.add_argument("--skip-toy", action="store_true", help="part 2 only")
    p.add_argument("--toy-levels", default="60,250", help="grid levels (part 1)")
    p.add_argument("--toy-resamples", default="1,2,5,10,20", help="jump_n_sample values (part 1)")
    p.add_argument("--toy-samples", type=int, default=4000, help="samples per setting (part 1)")
    p.add_argument("--out", default="bench/results", help="output folder")
    return p.parse_args(argv)


def machine() -> str:
    threads = torch.get_num_threads()
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s)"


def toy(args, out: Path) -> None:
    gauss = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.tensor([[[1.0, RHO], [RHO, 1.0]]]))
    cond_mean, cond_var = RHO * KNOWN, 1 - RHO**2
    rows = []
    for name in SDES:
        sde = make_sde(name)
        for levels in (int(v) for v in args.toy_levels.split(",")):
            ts = time_grid(sde, levels - 1, sampler="ddim")
            for r in (int(v) for v in args.toy_resamples.split(",")):
                g = torch.Generator().manual_seed(0)
                score = count_nfe(gauss.score_fn(sde))
                x_known = torch.tensor([KNOWN, 0.0]).expand(args.toy_samples, 2)
                start = time.perf_counter()
                x_T = sde.prior_sampling((args.toy_samples, 2), g)
                x = repaint_sample(score, sde, x_T, ts, x_known, torch.tensor([1.0, 0.0]), jump_length=10,
                                   jump_n_sample=r, generator=g)[:, 1]  # fmt: skip
                row = {
                    "sde": name,
                    "levels": levels,
                    "jump_n_sample": r,
                    "nfe": score.nfe,
                    "mean_error": x.mean().item() - cond_mean,
                    "mean_se": x.std().item() / math.sqrt(args.toy_samples),
                    "var_ratio": x.var().item() / cond_var,
                    "seconds": time.perf_counter() - start,
                }
                rows.append(row)
                print(f"{name:15s} {levels:4d} r={r:2d} NFE {score.nfe:5d} mean error {row['mean_error']:+.4f} "
                      f"(s.e. {row['mean_se']:.4f}) var/exact {row['var_ratio']:.3f}", flush=True)  # fmt: skip
    meta = {"machine": machine(), "samples": args.toy_samples, "jump_length": 10, "exact": [cond_mean, cond_var]}
    (out / "repaint_toy.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "| path | levels | jump_n_sample | NFE | imputed mean - 1.9 (s.e.) | variance / 0.0975 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['sde']} | {r['levels']} | {r['jump_n_sample']} | {r['nfe']} | {r['mean_error']:+.3f} "
                     f"({r['mean_se']:.3f}) | {r['var_ratio']:.3f} |")  # fmt: skip
    (out / "repaint_toy.md").write_text("\n".join(lines) + "\n")


@torch.no_grad()
def mnist(args, out: Path) -> None:
    from compose.checkpoints import load_evalnet, load_score_model
    from compose.features import evalnet_outputs, pixels_to_evalnet_input
    from data.images import save_grid
    from data.mnist import load_mnist_idx

    model, _ = load_score_model(args.checkpoint)
    net, _ = load_evalnet(args.evalnet)
    sde = model.sde
    images, labels = load_mnist_idx(args.test_root, "test")
    truth = pixels_to_evalnet_input(images[: args.num])  # mid-bin model space [N, 1, 28, 28]
    labels = labels[: args.num]
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., :14, :] = 1.0  # the top half is known
    ts = time_grid(sde, args.levels - 1, sampler="ddim")
    results, grids = {"meta": {"machine": machine(), "num": args.num, "levels": args.levels}}, [truth, truth * mask]
    for label, r in (("replacement", 1), ("repaint", args.jump_n_sample)):
        g = torch.Generator().manual_seed(0)
        score = count_nfe(model.score_fn())
        x_T = sde.prior_sampling(tuple(truth.shape), g)
        start = time.perf_counter()
        if r == 1:
            x = inpaint(SAMPLERS["ddim"], score, sde, x_T, ts, truth, mask, generator=g, eta=1.0)
        else:
            x = repaint_sample(score, sde, x_T, ts, truth, mask, jump_length=10, jump_n_sample=r, generator=g)
        seconds = time.perf_counter() - start
        _, preds = evalnet_outputs(net, x)
        mse = ((x - truth) ** 2 * (1 - mask)).sum().item() / ((1 - mask).sum().item() * args.num)
        results[label] = {"jump_n_sample": r, "nfe": score.nfe, "accuracy": float((preds == labels).mean()),
                          "mse_unknown": mse, "seconds": seconds}  # fmt: skip
        grids.append(x)
        print(label, results[label], flush=True)
    _, preds = evalnet_outputs(net, truth, quantize=False)
    results["real_digits_accuracy"] = float((preds == labels).mean())
    _, preds = evalnet_outputs(net, truth * mask - (1 - mask))  # the known half on a black background
    results["known_half_only_accuracy"] = float((preds == labels).mean())
    (out / "repaint_mnist.json").write_text(json.dumps(results, indent=1))
    save_grid(torch.cat([grid[:8] for grid in grids]), out / "repaint_mnist.png", nrow=8)
    print(results)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_toy:
        toy(args, out)
    if args.checkpoint:
        mnist(args, out)


if __name__ == "__main__":
    main()
