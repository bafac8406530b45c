"""Benchmark: sample quality against NFE for every sampler, on the Gaussian-mixture oracle (exact score).

With the exact score only the solver's error shows. Quality is the sliced 2-Wasserstein distance to 100,000
ground-truth samples (its floor: the distance of an exact sample set of the same size)
and the gap between the samples' mean exact log-density and its exact expectation E_p[log p] (0 for a perfect
sampler; negative for too spread-out samples). Prints the machine and the command; writes a table, a JSON file
and a PNG plot. `--checkpoint` runs the same sweep on a trained model (e.g. MNIST), against PC with 1000 steps.

    nice -n 10 python bench/samplers.py --num 2000 --sde vp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sde import SDE, make_sde  # noqa: E402

# (label, sampler, options, list of step counts): a sweep of each sampler's budget.
SWEEP = [
    ("pc (RD + Langevin)", "pc", {}, [50, 100, 250, 500, 1000]),
    ("ancestral", "ancestral", {}, [50, 100, 250, 500, 1000]),
    ("ald (logSNR grid)", "ald", {"grid": "logsnr", "n_steps": 5}, [20, 50, 100, 200]),  # eps: see run_one
    ("ode dopri5", "ode", {"rtol": 1e-3, "atol": 1e-3}, [1]),
    ("ode dopri5 tight", "ode", {"rtol": 1e-5, "atol": 1e-5}, [1]),
    ("ode heun (karras)", "ode", {"method": "heun", "grid": "karras"}, [5, 10, 20, 50]),
    ("ddim eta=0 (quadratic)", "ddim", {"grid": "quadratic"}, [10, 20, 50, 100]),
    ("ddim eta=1 (quadratic)", "ddim", {"grid": "quadratic", "eta": 1.0}, [20, 50, 100, 250]),
    ("dpm_solver++ 2M (logSNR)", "dpm_solver", {"grid": "logsnr", "order": 2}, [5, 10, 15, 20, 30]),
    ("dpm_solver++ 3M (logSNR)", "dpm_solver", {"grid": "logsnr", "order": 3}, [5, 10, 15, 20, 30]),
    ("dpm_solver++ 3M (quadratic)", "dpm_solver", {"grid": "quadratic", "order": 3}, [5, 10, 15, 20, 30]),
]


def mixture_score_fn(mixture, sde: SDE):
    """The mixture oracle's exact score as a score_fn (kept for callers; GaussianMixture.score is fast itself)."""
    return mixture.score_fn(sde)


class SlicedWasserstein:
    """Sliced 2-Wasserstein distance to a fixed (large) reference set (Rabin et al. 2011): on each random direction,
    the n sorted projections of the samples against the reference's quantiles at levels (i + 1/2) / n."""

    def __init__(self, reference: torch.Tensor, num_projections: int = 256, seed: int = 0):
        reference = reference.flatten(1).double()
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(reference.shape[1], num_projections, generator=g, dtype=torch.float64)
        self.dirs = dirs / dirs.norm(dim=0, keepdim=True)
        self.sorted_reference = (reference @ self.dirs).sort(0).values  # [M, P]

    def __call__(self, x: torch.Tensor) -> float:
        px = (x.flatten(1).double() @ self.dirs).sort(0).values  # [n, P]
        m = len(self.sorted_reference)
        levels = ((torch.arange(len(x), dtype=torch.float64) + 0.5) / len(x) * m).long()
        return float(((px - self.sorted_reference[levels]) ** 2).mean().sqrt())


def machine() -> str:
    """One line describing this machine and the torch build."""
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")


def run_one(sampler: str, score_fn, sde: SDE, shape, num: int, steps: int, options: dict, seed: int):
    """Draw num samples with one sampler; returns (samples, NFE per batch, wall seconds)."""
    from samplers import count_nfe, run_sampler

    options = dict(options)
    grid, t_min = options.pop("grid", "uniform"), options.pop("t_min", 1e-3)
    if sampler == "ald" and "eps" not in options:  # top-level step = noise variance (stable below 4x; see langevin)
        alpha, sigma = sde.marginal(torch.tensor([t_min], dtype=torch.float64))
        options["eps"] = float(sigma / alpha) ** 2
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sampling((num, *shape), g)
    counted = count_nfe(score_fn)
    start = time.perf_counter()
    out = run_sampler(sampler, counted, sde, x, steps=steps, grid=grid, t_min=t_min, generator=g, **options)
    return out, counted.nfe, time.perf_counter() - start


def oracle_sweep(sde_name: str, num: int, sweep, seed: int = 0) -> tuple[list[dict], dict]:
    """Run the sweep on the 'gmm2d' oracle; returns result rows and the reference floors."""
    from data.toy import make_mixture

    mixture, sde = make_mixture("gmm2d"), make_sde(sde_name)
    score_fn = mixture_score_fn(mixture, sde)
    exact = mixture.sample(num, torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
    truth = mixture.sample(100_000, torch.Generator().manual_seed(30_000 + seed), dtype=torch.float64)
    expected_logp = float(mixture.log_prob(truth).mean())
    sliced_w2 = SlicedWasserstein(truth)
    floors = {"sw_floor": sliced_w2(exact), "logp_se": float(mixture.log_prob(truth).std()) / num**0.5,
              "expected_logp": expected_logp}
    rows = []
    for label, sampler, options, step_list in sweep:
        for steps in step_list:
            out, nfe, secs = run_one(sampler, score_fn, sde, mixture.shape, num, steps, options, seed)
            out = out.double()
            dlogp = float(mixture.log_prob(out).mean()) - expected_logp
            rows.append({"sampler": label, "name": sampler, "options": options, "steps": steps, "nfe": nfe,
                         "sw": sliced_w2(out), "dlogp": dlogp, "seconds": secs})
            print(f"  {label:28s} steps={steps:5d} nfe={nfe:5d} sw={rows[-1]['sw']:.4f} "
                  f"dlogp={rows[-1]['dlogp']:+.4f} ({secs:.1f}s)", flush=True)
    return rows, floors


def checkpoint_sweep(path: str, num: int, sweep, seed: int = 0) -> tuple[list[dict], dict]:
    """Run the sweep on a trained checkpoint; reference: PC with 1000 steps from other noise (and its own floor)."""
    from evaluation.sample import build_score_fn, model_shape
    from training.checkpoint import load_score_model

    model, cfg = load_score_model(path, "cpu", True)
    model.eval()
    sde, shape = model.sde, model_shape(model, cfg)
    score_fn = build_score_fn(model, None, None)
    with torch.no_grad():
        ref, _, _ = run_one("pc", score_fn, sde, shape, num, 1000, {}, seed + 1)
        ref2, _, _ = run_one("pc", score_fn, sde, shape, num, 1000, {}, seed + 2)
        sliced_w2 = SlicedWasserstein(ref)
        floors = {"sw_floor": sliced_w2(ref2)}
        rows = []
        for label, sampler, options, step_list in sweep:
            for steps in step_list:
                out, nfe, secs = run_one(sampler, score_fn, sde, shape, num, steps, options, seed)
                rows.append({"sampler": label, "name": sampler, "options": options, "steps": steps, "nfe": nfe,
                             "sw": sliced_w2(out), "dlogp": float("nan"), "seconds": secs})
                print(f"  {label:28s} steps={steps:5d} nfe={nfe:5d} sw={rows[-1]['sw']:.4f} ({secs:.1f}s)", flush=True)
    return rows, floors


def table(rows: list[dict], floors: dict) -> str:
    """A markdown table of the results."""
    lines = ["| sampler | steps | NFE | sliced W2 | mean log p - E log p | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['sw']:.4f} | {r['dlogp']:+.4f} | "
                     f"{r['seconds']:.1f} |")
    floor = f"sliced W2 of an exact sample set of the same size (the floor): {floors['sw_floor']:.4f}"
    if "logp_se" in floors:
        floor += f"; Monte-Carlo s.e. of mean log p: {floors['logp_se']:.4f}"
    return "\n".join(lines) + "\n\n" + floor


def plot(rows: list[dict], floors: dict, path: str, title: str) -> None:
    """Sliced W2 and |mean log p - E log p| against NFE, one line per sampler, with the Monte-Carlo levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_logp = "logp_se" in floors
    fig, axes = plt.subplots(1, 2 if with_logp else 1, figsize=(13 if with_logp else 7, 4.8), squeeze=False)
    for i, label in enumerate(dict.fromkeys(r["sampler"] for r in rows)):
        pts = sorted((r["nfe"], r["sw"], abs(r["dlogp"])) for r in rows if r["sampler"] == label)
        nfe, sw, dlogp = zip(*pts)
        style = {"marker": "o", "label": label, "ls": "-" if i < 10 else "--"}  # 10 colours, then dashed
        axes[0, 0].plot(nfe, sw, **style)
        if with_logp:
            axes[0, 1].plot(nfe, dlogp, **style)
    axes[0, 0].axhline(floors["sw_floor"], color="k", ls="--", lw=1, label="exact samples")
    axes[0, 0].set(xscale="log", yscale="log", xlabel="NFE per sample", ylabel="sliced W2 to the truth")
    if with_logp:
        axes[0, 1].axhline(2 * floors["logp_se"], color="k", ls="--", lw=1, label="2 Monte-Carlo s.e.")
        axes[0, 1].set(xscale="log", yscale="log", xlabel="NFE per sample", ylabel="|mean log p - E log p| (nats)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sde", default="vp", help="vp, subvp, ve or ddpm (oracle runs)")
    parser.add_argument("--num", type=int, default=2000, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer step counts (a smoke run)")
    parser.add_argument("--checkpoint", default="", help="a trained model's work dir or checkpoint file")
    parser.add_argument("--out", default="bench/results/samplers", help="path prefix of the .json and .png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    sweep = [(lab, s, o, steps[:2] if args.quick else steps) for lab, s, o, steps in SWEEP]
    if args.checkpoint:
        rows, floors = checkpoint_sweep(args.checkpoint, args.num, sweep, args.seed)
        title = f"samplers on {args.checkpoint} (vs PC 1000 steps)"
    else:
        rows, floors = oracle_sweep(args.sde, args.num, sweep, args.seed)
        title = f"samplers on the gmm2d oracle, {args.sde} SDE, {args.num} samples"
    print(table(rows, floors))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    result = {"command": " ".join(sys.argv), "machine": machine(), "sde": args.sde, "num": args.num,
              "checkpoint": args.checkpoint, "floors": floors, "rows": rows}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    plot(rows, floors, args.out + ".png", title)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
