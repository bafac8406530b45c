"""Benchmark: sample quality against NFE for every sampler, on the Gaussian-mixture oracle (exact score).

With the exact score only the solver's error shows. Quality is the sliced 2-Wasserstein distance to 100,000
ground-truth samples (its floor: the distance of an exact sample set of the same size)
and the gap between the samples' mean exact log-density and its exact expectation E_p[log p] (0 for a perfect
sampler; negative for too spread-out samples). Prints the machine and the command; writes a table, a JSON file
and a PNG plot. `--checkpoint` runs the same sweep on a trained model (e.g. MNIST), against PC with 1000 steps;
with `--evalnet` (and `--test-root`) it runs a CPU-sized sweep scored by FID/KID under the MNIST evaluation network
against the real test digits, with real training digits of the same count as the floor.

    nice -n 10 python bench/samplers.py --num 2000 --sde vp
    python bench/samplers.py --checkpoint runs/vp_mnist --evalnet runs/evalnet --test-root data/mnist --num 500 \
        --out bench/results/samplers_mnist
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

from infra.io import atomic_write_bytes  # noqa: E402
from sde import SDE, make_sde  # noqa: E402

# Issue 15's few-step sweep (the path's default grids): 5, 10, 15, 20 steps (or NFE budgets with --nfe).
FAST_SWEEP = [
    ("fast: unipc bh2", "unipc", {}, [5, 10, 15, 20]),
    ("fast: dpm_solver++ 2M", "dpm_solver", {"order": 2}, [5, 10, 15, 20]),
    ("fast: dpm_solver++ 3M exact", "dpm_solver", {"order": 3}, [5, 10, 15, 20]),
    ("fast: dpm_solver++ 3M reference", "dpm_solver", {"order": 3, "third_order": "reference"}, [5, 10, 15, 20]),
    ("fast: dpm_solver++ 2M SDE eta=1", "dpm_solver", {"order": 2, "eta": 1.0}, [5, 10, 15, 20]),
    ("fast: edm churn", "edm", {"s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0}, [3, 5, 7, 10]),
    ("fast: edm heun (no churn)", "edm", {}, [3, 5, 7, 10]),
    ("fast: restart [3, 2, 0.06, 0.3]", "restart", {}, [5, 7, 10, 17]),  # the authors' CIFAR-10 interval
    ("fast: restart [3, 4, 0.06, 0.3]", "restart", {"intervals": [[3, 4, 0.06, 0.3]]}, [5, 7, 10, 13]),
    ("fast: restart [3, 2, 0.3, 2.0]", "restart", {"intervals": [[3, 2, 0.3, 2.0]]}, [5, 7, 10, 17]),
    (
        "fast: restart [3, 1, 1.0, 3.0] + [3, 2, 0.06, 0.3]",
        "restart",
        {"intervals": [[3, 1, 1.0, 3.0], [3, 2, 0.06, 0.3]]},
        [5, 7, 10, 15],
    ),
    ("fast: dpm_solver 2M (noise)", "dpm_solver", {"order": 2, "prediction": "noise"}, [5, 10, 15, 20]),
    ("fast: dpm_solver 3M exact (noise)", "dpm_solver", {"order": 3, "prediction": "noise"}, [5, 10, 15, 20]),
    (
        "fast: dpm_solver-2 singlestep (noise)",
        "dpm_solver",
        {"order": 2, "method": "singlestep", "prediction": "noise"},
        [2, 5, 7, 10],
    ),
    (
        "fast: dpm_solver-3 singlestep (noise)",
        "dpm_solver",
        {"order": 3, "method": "singlestep", "prediction": "noise"},
        [2, 3, 5, 7],
    ),
    ("fast: dpm_solver++ 3S singlestep", "dpm_solver", {"order": 3, "method": "singlestep"}, [2, 3, 5, 7]),
    ("fast: unipc bh2 (noise)", "unipc", {"prediction": "noise"}, [5, 10, 15, 20]),
    (
        "fast: dpm_solver-fast 3 (noise)",
        "dpm_solver",
        {"order": 3, "method": "fast", "prediction": "noise"},
        [5, 10, 15, 20],
    ),
    ("fast: dpm_solver++ fast 3", "dpm_solver", {"order": 3, "method": "fast"}, [5, 10, 15, 20]),
    ("fast: pndm (F-PNDM)", "pndm", {}, [5, 10, 40]),
    ("fast: pndm plms", "pndm", {"warmup": "plms"}, [5, 10, 15, 20]),
    ("fast: lms 4", "lms", {}, [5, 10, 15, 20]),
    ("fast: dpm_solver 2M SDE eta=1 (noise)", "dpm_solver", {"order": 2, "eta": 1.0, "prediction": "noise"}, [5, 10]),
    ("fast: dpm_solver++ 2S ancestral eta=1", "dpm_solver", {"order": 2, "method": "singlestep", "eta": 1.0}, [2, 5]),
    (
        "fast: dpm_solver-2 ancestral eta=1 (noise)",
        "dpm_solver",
        {"order": 2, "method": "singlestep", "eta": 1.0, "prediction": "noise"},
        [2, 5],
    ),
    ("fast: dpm_solver++ SDE (k-diffusion) eta=1", "dpm_solver", {"method": "sde", "eta": 1.0}, [2, 5]),
    ("fast: sa_solver 3/4 tau=1", "sa_solver", {}, [5, 10, 15, 20]),
    ("fast: sa_solver 3/4 tau=0", "sa_solver", {"tau": 0.0}, [5, 10, 15, 20]),
    (
        "fast: sa_solver 2/2 last (diffusers' default)",
        "sa_solver",
        {"predictor_order": 2, "corrector_order": 2, "lower_order_final": "last"},
        [5, 10, 15, 20],
    ),
    (
        "fast: dpm_solver-fast 3 ancestral eta=1 (noise)",
        "dpm_solver",
        {"order": 3, "method": "fast", "eta": 1.0, "prediction": "noise"},
        [5, 10],
    ),
]

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
    ("dpm_solver++ 2M SDE eta=1 (logSNR)", "dpm_solver", {"grid": "logsnr", "order": 2, "eta": 1.0}, [10, 20, 30, 50]),
    (
        "dpm_solver++ 2M SDE eta=1 (quadratic)",
        "dpm_solver",
        {"grid": "quadratic", "order": 2, "eta": 1.0},
        [10, 20, 30, 50],
    ),
    *FAST_SWEEP,
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
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def run_one(sampler: str, score_fn, sde: SDE, shape, num: int, steps: int, options: dict, seed: int):
    """Draw num samples with one sampler; returns (samples, NFE per batch, wall seconds)."""
    from samplers import count_nfe, run_sampler

    options = dict(options)
    grid, t_min = options.pop("grid", "default"), options.pop("t_min", 1e-3)
    if sampler == "ald" and "eps" not in options:  # top-level step = noise variance (stable below 4x; see langevin)
        alpha, sigma = sde.marginal(torch.tensor([t_min], dtype=torch.float64))
        options["eps"] = float(sigma / alpha) ** 2
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sampling((num, *shape), g)
    counted = count_nfe(score_fn)
    start = time.perf_counter()
    out = run_sampler(sampler, counted, sde, x, steps=steps, grid=grid, t_min=t_min, generator=g, **options)
    return out, counted.nfe, time.perf_counter() - start


def nfe_of(sampler: str, sde: SDE, shape, steps: int, options: dict) -> int | None:
    """Network calls of `sampler` with `steps` steps (a dry run on one sample with a stand-in score), or None if
    that step count is not allowed."""
    try:
        _, nfe, _ = run_one(sampler, lambda x, t: -x, sde, shape, 1, steps, options, 0)
    except ValueError:
        return None
    return nfe


def steps_for_nfe(sweep, targets: list[int], sde: SDE, shape) -> list:
    """The sweep with each row's step counts replaced by those whose NFE is the largest not above each target
    (rows of adaptive solvers, whose NFE no step count fixes, are dropped)."""
    out = []
    for label, sampler, options, _ in sweep:
        if sampler == "ode" and options.get("method", "dopri5") not in ("euler", "heun", "rk4"):
            continue
        counts = {}
        for steps in range(1, max(targets) + 1):
            nfe = nfe_of(sampler, sde, shape, steps, options)
            if nfe is not None:
                counts.setdefault(nfe, steps)  # the fewest steps giving that NFE
        chosen = []
        for target in targets:
            best = max((n for n in counts if n <= target), default=None)
            if best is not None and counts[best] not in chosen:
                chosen.append(counts[best])
        out.append((label, sampler, options, chosen))
    return out


def oracle_sweep(
    sde_name: str, num: int, sweep, seed: int = 0, on_row=None, num_reference: int = 100_000, nfe_targets=None
) -> tuple[list[dict], dict]:
    """Run the sweep on the 'gmm2d' oracle; returns result rows and the reference floors."""
    from data.toy import make_mixture

    mixture, sde = make_mixture("gmm2d"), make_sde(sde_name)
    if nfe_targets:
        sweep = steps_for_nfe(sweep, nfe_targets, sde, mixture.shape)
    score_fn = mixture_score_fn(mixture, sde)
    exact = mixture.sample(num, torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
    truth = mixture.sample(num_reference, torch.Generator().manual_seed(30_000 + seed), dtype=torch.float64)
    expected_logp = float(mixture.log_prob(truth).mean())
    sliced_w2 = SlicedWasserstein(truth)
    floors = {
        "sw_floor": sliced_w2(exact),
        "logp_se": float(mixture.log_prob(truth).std()) / num**0.5,
        "expected_logp": expected_logp,
    }
    rows = []
    for label, sampler, options, step_list in sweep:
        for steps in step_list:
            out, nfe, secs = run_one(sampler, score_fn, sde, mixture.shape, num, steps, options, seed)
            out = out.double()
            dlogp = float(mixture.log_prob(out).mean()) - expected_logp
            rows.append(
                {
                    "sampler": label,
                    "name": sampler,
                    "options": options,
                    "steps": steps,
                    "nfe": nfe,
                    "sw": sliced_w2(out),
                    "dlogp": dlogp,
                    "seconds": secs,
                }
            )
            print(
                f"  {label:28s} steps={steps:5d} nfe={nfe:5d} sw={rows[-1]['sw']:.4f} "
                f"dlogp={rows[-1]['dlogp']:+.4f} ({secs:.1f}s)",
                flush=True,
            )
            if on_row is not None:
                on_row(rows, floors)
    return rows, floors


MNIST_SWEEP = [  # CPU-sized for a trained U-Net (3 s per NFE for 500 samples on one core): cheap solvers first
    ("ddim eta=0 (quadratic)", "ddim", {"grid": "quadratic"}, [10, 20, 50]),
    ("ddim eta=1 (quadratic)", "ddim", {"grid": "quadratic", "eta": 1.0}, [10, 20, 50]),
    ("dpm_solver++ 2M (logSNR)", "dpm_solver", {"grid": "logsnr", "order": 2}, [10, 20]),
    ("dpm_solver++ 3M (quadratic)", "dpm_solver", {"grid": "quadratic", "order": 3}, [10, 20]),
    ("dpm_solver++ 2M SDE eta=1 (logSNR)", "dpm_solver", {"grid": "logsnr", "order": 2, "eta": 1.0}, [10, 20]),
    ("dpm_solver++ 2M SDE eta=1 (quadratic)", "dpm_solver", {"grid": "quadratic", "order": 2, "eta": 1.0}, [10, 20]),
    ("ode heun (karras)", "ode", {"method": "heun", "grid": "karras"}, [10, 20]),
    ("ode dopri5", "ode", {"rtol": 1e-3, "atol": 1e-3}, [1]),
    ("ancestral", "ancestral", {}, [100, 250]),
    ("pc (RD + Langevin)", "pc", {}, [100, 1000]),
    *FAST_SWEEP,
]


def evalnet_scorer(evalnet: str, test_root: str, num_real: int, train_cfg):
    """(fid_of(x) -> (FID, KID) of model-space samples against `num_real` real MNIST test digits under the
    evaluation network, floor) where floor is the same metric for as many real training digits as samples."""
    from compose.checkpoints import config_from_dict, load_evalnet
    from compose.features import evalnet_outputs, load_test_digits, pixels_to_evalnet_input
    from evaluation.quality import frechet_distance, kernel_inception_distance

    net, _ = load_evalnet(evalnet, "cpu")
    cfg = config_from_dict(train_cfg) if isinstance(train_cfg, dict) else train_cfg
    cfg.eval.data_root, cfg.eval.num_real = test_root, num_real
    images, _, _ = load_test_digits(cfg, num_real)
    real, _ = evalnet_outputs(net, pixels_to_evalnet_input(images), quantize=False)

    def score(x: torch.Tensor, quantize: bool = True) -> tuple[float, float]:
        feats, _ = evalnet_outputs(net, x, quantize=quantize)
        kid, _ = kernel_inception_distance(feats, real, 50, min(len(feats), len(real), 1000))
        return frechet_distance(feats, real), kid

    def floor(num: int) -> tuple[float, float]:
        import numpy as np

        from data.mnist import load_mnist

        train, _, _ = load_mnist(cfg.data.source, cfg.data.root, "train", progress=False)
        pick = np.random.default_rng(0).choice(len(train), num, replace=False)
        return score(pixels_to_evalnet_input(train[pick]), quantize=False)

    return score, floor


def checkpoint_sweep(
    path: str,
    num: int,
    sweep,
    seed: int = 0,
    evalnet: str = "",
    test_root: str = "",
    batch: int = 250,
    on_row=None,
    t_max_override: float = 0.0,
    nfe_targets=None,
) -> tuple[list[dict], dict]:
    """Run the sweep on a trained checkpoint. Reference: PC with 1000 steps from other noise (sliced W2 in pixel
    space, with its own floor); with an evaluation network also FID/KID against the real test digits."""
    from compose.checkpoints import load_score_model
    from compose.sampling import build_score_fn, model_shape

    model, cfg = load_score_model(path, "cpu", True)
    model.eval()
    sde, shape = model.sde, model_shape(model, cfg)
    score_fn = build_score_fn(model, None, None)
    if nfe_targets:
        sweep = steps_for_nfe(sweep, nfe_targets, sde, shape)
    fid_of, floors = None, {}
    if evalnet:
        fid_of, fid_floor = evalnet_scorer(evalnet, test_root, 10_000, cfg)
        floors["fid_floor"], floors["kid_floor"] = fid_floor(num)
        print(f"  real training digits (n={num}): FID {floors['fid_floor']:.3f} KID {floors['kid_floor']:.4f}")

    def draw(sampler, steps, options, s):  # in batches, so memory stays flat for any num
        outs, nfe, secs = [], 0, 0.0
        for b, start in enumerate(range(0, num, batch)):
            out, n, t = run_one(sampler, score_fn, sde, shape, min(batch, num - start), steps, options, s * 1000 + b)
            outs.append(out)
            nfe, secs = n, secs + t
        return torch.cat(outs), nfe, secs

    with torch.no_grad():
        if fid_of is None:  # no real-data metric: compare with PC 1000 steps, floor from a second PC run
            ref, _, _ = draw("pc", 1000, {}, seed + 1)
            ref2, _, _ = draw("pc", 1000, {}, seed + 2)
            sliced_w2 = SlicedWasserstein(ref)
            floors["sw_floor"] = sliced_w2(ref2)
        else:  # FID/KID against real test digits replaces the sliced W2 to PC-1000 (4,000 NFE saved per image)

            def sliced_w2(_):
                return float("nan")

        rows = []
        for label, sampler, options, step_list in sweep:
            for steps in step_list:
                # The checkpoint's own t_max (e.g. the cosine recipe's 0.99608) unless the row names one.
                t_max = t_max_override or cfg["sampling"].get("t_max", 0.0) or None
                out, nfe, secs = draw(sampler, steps, {"t_max": t_max, **options}, seed)
                row = {
                    "sampler": label,
                    "name": sampler,
                    "options": options,
                    "steps": steps,
                    "nfe": nfe,
                    "sw": sliced_w2(out),
                    "dlogp": float("nan"),
                    "seconds": secs,
                }
                msg = f"  {label:28s} steps={steps:5d} nfe={nfe:5d} sw={row['sw']:.4f}"
                if fid_of is not None:
                    row["fid"], row["kid"] = fid_of(out)
                    msg += f" fid={row['fid']:.3f} kid={row['kid']:.4f}"
                rows.append(row)
                print(f"{msg} ({secs:.1f}s)", flush=True)
                if on_row is not None:
                    on_row(rows, floors)
    return rows, floors


def table(rows: list[dict], floors: dict) -> str:
    """A markdown table of the results (FID/KID columns when an evaluation network scored the samples)."""
    if "fid_floor" in floors:
        lines = ["| sampler | steps | NFE | FID (eval net) | KID | seconds |", "|---|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['fid']:.3f} | {r['kid']:.4f} | {r['seconds']:.1f} |"
            for r in rows
        ]
        return "\n".join(lines) + (
            f"\n\nreal training digits of the same count (the floor): FID "
            f"{floors['fid_floor']:.3f}, KID {floors['kid_floor']:.4f}"
        )
    lines = ["| sampler | steps | NFE | sliced W2 | mean log p - E log p | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['sw']:.4f} | {r['dlogp']:+.4f} | {r['seconds']:.1f} |"
        )
    floor = f"sliced W2 of an exact sample set of the same size (the floor): {floors['sw_floor']:.4f}"
    if "logp_se" in floors:
        floor += f"; Monte-Carlo s.e. of mean log p: {floors['logp_se']:.4f}"
    return "\n".join(lines) + "\n\n" + floor


def plot(rows: list[dict], floors: dict, path: str, title: str) -> None:
    """Sliced W2 (or evaluation-net FID) and |mean log p - E log p| against NFE, one line per sampler, with the
    Monte-Carlo levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_logp, with_fid = "logp_se" in floors, "fid_floor" in floors
    key = "fid" if with_fid else "sw"
    fig, axes = plt.subplots(1, 2 if with_logp else 1, figsize=(13 if with_logp else 7, 4.8), squeeze=False)
    for i, label in enumerate(dict.fromkeys(r["sampler"] for r in rows)):
        pts = sorted((r["nfe"], r[key], abs(r["dlogp"])) for r in rows if r["sampler"] == label)
        nfe, quality, dlogp = zip(*pts)
        style = {"marker": "o", "label": label, "ls": "-" if i < 10 else "--"}  # 10 colours, then dashed
        axes[0, 0].plot(nfe, quality, **style)
        if with_logp:
            axes[0, 1].plot(nfe, dlogp, **style)
    if with_fid:
        axes[0, 0].axhline(floors["fid_floor"], color="k", ls="--", lw=1, label="real training digits")
        axes[0, 0].set(xscale="log", yscale="log", xlabel="NFE per sample", ylabel="FID under the MNIST eval net")
    else:
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
    parser.add_argument("--sde", default="vp", help="oracle runs: any path of sde.SDES (vp, subvp, ve, ddpm, ...)")
    parser.add_argument("--num", type=int, default=2000, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer step counts (a smoke run)")
    parser.add_argument("--checkpoint", default="", help="a trained model's work dir or checkpoint file")
    parser.add_argument("--out", default="bench/results/samplers", help="path prefix of the .json and .png")
    parser.add_argument("--evalnet", default="", help="with --checkpoint: MNIST evaluation-net work dir -> FID/KID")
    parser.add_argument("--test-root", default="", help="with --evalnet: folder of the real MNIST test IDX files")
    parser.add_argument(
        "--only",
        default="",
        help="run only the sweep rows whose label contains this text (or any of several joined by '|')",
    )
    parser.add_argument("--reference", type=int, default=100_000, help="oracle: exact samples in the reference set")
    parser.add_argument("--steps", default="", help="comma-separated step counts replacing each row's own list")
    parser.add_argument("--t-max", type=float, default=0.0, help="with --checkpoint: first grid time (0: its config's)")
    parser.add_argument("--nfe", default="", help="comma-separated NFE budgets: each row's steps chosen to meet them")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    if args.evalnet and not (args.checkpoint and args.test_root):
        parser.error("--evalnet needs --checkpoint and --test-root (the real MNIST test IDX folder)")
    base = MNIST_SWEEP if args.evalnet else SWEEP
    override = [int(n) for n in args.steps.split(",")] if args.steps else None
    nfe_targets = [int(n) for n in args.nfe.split(",")] if args.nfe else None
    sweep = [
        (lab, s, o, override or (steps[:2] if args.quick else steps))
        for lab, s, o, steps in base
        if any(part in lab for part in args.only.split("|"))
    ]
    if not sweep:
        parser.error(f"--only {args.only!r} matches no sweep row; rows are {[row[0] for row in base]}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def write_json(rows, floors, complete=False):  # after every row, so an interrupted sweep keeps what it measured
        result = {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "sde": args.sde,
            "num": args.num,
            "checkpoint": args.checkpoint,
            "complete": complete,
            "floors": floors,
            "rows": rows,
        }
        atomic_write_bytes(args.out + ".json", json.dumps(result, indent=1).encode())

    if args.checkpoint:
        rows, floors = checkpoint_sweep(
            args.checkpoint,
            args.num,
            sweep,
            args.seed,
            args.evalnet,
            args.test_root,
            on_row=write_json,
            t_max_override=args.t_max,
            nfe_targets=nfe_targets,
        )
        title = (
            f"samplers on {args.checkpoint}, {args.num} samples"
            if args.evalnet
            else f"samplers on {args.checkpoint} (vs PC 1000 steps)"
        )
    else:
        rows, floors = oracle_sweep(
            args.sde, args.num, sweep, args.seed, on_row=write_json, num_reference=args.reference,
            nfe_targets=nfe_targets,
        )  # fmt: skip
        title = f"samplers on the gmm2d oracle, {args.sde} SDE, {args.num} samples"
    print(table(rows, floors))
    write_json(rows, floors, complete=True)
    plot(rows, floors, args.out + ".png", title)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
