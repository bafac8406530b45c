"""Benchmark: the bias of every (sampler, path, grid) combination at its documented step count, on the exact score.

For each combination it samples the 4-mode Gaussian mixture with its exact score (so only the sampler's own error
shows) and reports
- d = 2 (n = --num): max |z| over the means of h(x) = (x, x^2, one-hot of the most probable mode, log p_0(x))
  against their exact expectations (40,000 exact draws; an unbiased sampler gives max |z| < 4 almost always);
- d = --high-dim (n = --num-high, isotropic modes of variance v_k): the spread error, the mean over samples of
  ||x - m_k||^2 / (d v_k) - 1 with k the sample's most probable mode, in per cent with its standard error (from
  exact draws; 0 for an unbiased sampler: "+12 %" is a 12 % too large variance), and the z of the mode weights.
A cell is "ok" when max |z| < 4 in d = 2 and both the spread error and the mode-weight z are within 4 s.e. in
high d. Prints markdown tables and writes JSON;
docs/samplers.md quotes them, and the run-time warnings of `compose/biased.py` come from them.

    nice -n 10 python bench/defaults.py --out bench/results/defaults_oracle
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.toy import make_mixture  # noqa: E402
from infra.io import atomic_write_json  # noqa: E402
from samplers import GRIDS, count_nfe, run_sampler  # noqa: E402
from sde import SDES, VPSDE, make_sde  # noqa: E402

# (label, sampler, options): each sampler at the step count docs/samplers.md documents for it.
SETTINGS = [
    ("ancestral 200", "ancestral", {"steps": 200}),
    ("pc 200", "pc", {"steps": 200}),
    ("ode heun 10 (21 NFE)", "ode", {"steps": 10, "method": "heun"}),
    ("ddim 50", "ddim", {"steps": 50}),
    ("ddim eta=1 50", "ddim", {"steps": 50, "eta": 1.0}),
    ("dpm_solver 2M 10", "dpm_solver", {"steps": 10, "order": 2}),
    ("dpm_solver 2M 20", "dpm_solver", {"steps": 20, "order": 2}),
    ("dpm_solver 3M 20", "dpm_solver", {"steps": 20, "order": 3}),
    ("dpm_solver 2M SDE 20", "dpm_solver", {"steps": 20, "order": 2, "eta": 1.0}),
    ("unipc 10", "unipc", {"steps": 10}),
    ("unipc 20", "unipc", {"steps": 20}),
    ("edm churn 20 (41 NFE)", "edm", {"steps": 20, "s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    ("restart 17 (43 NFE)", "restart", {"steps": 17}),  # its defaults: the authors' CIFAR-10 interval
]


def statistics(mix, x):
    post = mix.class_log_posterior(x, 0.0, VPSDE())  # VP at t = 0 is p_0 itself
    assign = torch.nn.functional.one_hot(post.argmax(1), mix.num_classes).double()
    return torch.cat([x, x**2, assign, mix.log_prob(x)[:, None]], 1)


def spread(mix, x):
    """Per sample ||x - m_k||^2 / (d v_k) - 1 for its most probable mode k, and the one-hot of k."""
    k = mix.class_log_posterior(x, 0.0, VPSDE()).argmax(1)
    r = (x - mix.means[k]).pow(2).sum(1) / (mix.dim * mix._iso_var[k]) - 1
    return r, torch.nn.functional.one_hot(k, mix.num_classes).double()


def run(mix, sde, sampler, options, n, grid, seed):
    g = torch.Generator().manual_seed(seed)
    score_fn = count_nfe(mix.score_fn(sde))
    x = run_sampler(sampler, score_fn, sde, sde.prior_sampling((n, mix.dim), g), generator=g, grid=grid, **options)
    return x.double(), score_fn.nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--num-high", type=int, default=500)
    parser.add_argument("--high-dim", type=int, default=784)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", default=",".join(SDES))
    parser.add_argument("--out", default="bench/results/defaults_oracle")
    parser.add_argument("--only", default="", help="run only the settings whose label contains this text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    low, high = make_mixture("gmm2d"), make_mixture("gmm2d", dim=args.high_dim, seed=1)
    ref = statistics(low, low.sample(40_000, torch.Generator().manual_seed(123), dtype=torch.float64))
    ref_mean, ref_var = ref.mean(0), ref.var(0)
    ref_r, ref_k = spread(high, high.sample(20_000, torch.Generator().manual_seed(124), dtype=torch.float64))
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# n = {args.num} (d = 2), {args.num_high} (d = {args.high_dim}); seed {args.seed}\n")
    rows = []
    for name in args.paths.split(","):
        sde = make_sde(name)
        print("cells: max |z| in d = 2, spread error in high d (per cent, ± s.e.)")
        print(f"\n### {name}\n\n| sampler | " + " | ".join(sorted(GRIDS)) + " |\n" + "|---" * (len(GRIDS) + 1) + "|")
        for label, sampler, options in [row for row in SETTINGS if args.only in row[0]]:
            cells = []
            for grid in sorted(GRIDS):
                start = time.perf_counter()
                x, nfe = run(low, sde, sampler, options, args.num, grid, args.seed)
                h = statistics(low, x)
                z = (h.mean(0) - ref_mean) / (ref_var * (1 / args.num + 1 / ref.shape[0])).sqrt()
                gap = float(h[:, -1].mean() - ref_mean[-1])
                gap_se = math.sqrt(float(h[:, -1].var()) / args.num + float(ref_var[-1]) / ref.shape[0])
                xh, _ = run(high, sde, sampler, options, args.num_high, grid, args.seed)
                r, k = spread(high, xh)
                var_err = 100 * float(r.mean())  # the exact draws' mean is ~0 (checked: ref_r.mean())
                var_se = 100 * math.sqrt(float(ref_r.var()) * (1 / len(r) + 1 / len(ref_r)))
                zk = (k.mean(0) - ref_k.mean(0)) / (ref_k.var(0) * (1 / len(r) + 1 / len(ref_r))).sqrt()
                finite = bool(torch.isfinite(z).all()) and math.isfinite(var_err)
                ok = finite and float(z.abs().max()) < 4 and abs(var_err) < 4 * var_se and float(zk.abs().max()) < 4
                rows.append(
                    {
                        "path": name,
                        "sampler": sampler,
                        "label": label,
                        "options": options,
                        "grid": grid,
                        "nfe": nfe,
                        "max_abs_z": float(z.abs().max()) if finite else None,
                        "logp_gap": gap if finite else None,
                        "logp_gap_se": gap_se,
                        "spread_error_pct": var_err if finite else None,
                        "spread_error_se_pct": var_se,
                        "mode_weight_max_abs_z": float(zk.abs().max()) if finite else None,
                        "ok": ok,
                        "seconds": time.perf_counter() - start,
                    }
                )
                if not finite:
                    cells.append("diverges")
                else:
                    mark = "ok" if ok else "**biased**"
                    cells.append(f"{mark} {float(z.abs().max()):.1f}, {var_err:+.1f}±{var_se:.1f}%")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_json(
        args.out + ".json",
        {
            "command": "python " + " ".join(sys.argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "num": args.num,
            "num_high": args.num_high,
            "high_dim": args.high_dim,
            "seed": args.seed,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
