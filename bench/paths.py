"""Benchmark: every sampler on every Gaussian path, against the exact answer of a 2-D Gaussian mixture.

For each (sampler setting, path) it draws n samples with the mixture's exact score and reports the largest |z| over
the means of h(x) = (x, x^2, one-hot of the most probable component, log p_0(x)) against their exact expectations
(40,000 exact draws), z = (mean_n - mean_ref) / sqrt(var h (1/n + 1/40000)); an exact sampler gives |z| ~ N(0, 1)
per statistic (max over 9 of them: < 3 almost always, > 5 with probability ~1e-5), so a large max |z| is a bias.
Also the mean log-density gap E_q[log p] - E_p[log p] in nats with its standard error. Prints a markdown table and
writes JSON (tests/test_samplers.py asserts max |z| < 5 for the same settings).

    nice -n 10 python bench/paths.py --num 2000 --out bench/results/paths_oracle
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.toy import make_mixture  # noqa: E402
from infra.io import atomic_write_json  # noqa: E402
from samplers import count_nfe, run_sampler  # noqa: E402
from sde import SDES, VPSDE, make_sde  # noqa: E402

CASES = [
    ("ancestral", {"steps": 200}),
    ("ancestral", {"steps": 200, "variance": "posterior"}),
    ("pc", {"steps": 200}),
    ("pc", {"steps": 120, "predictor": "euler_maruyama", "corrector": "ald"}),
    ("ald", {"steps": 100, "n_steps": 8, "grid": "logsnr"}),
    ("ode", {"steps": 1}),
    ("ode", {"steps": 20, "method": "rk4", "grid": "logsnr"}),
    ("ddim", {"steps": 100, "grid": "quadratic"}),
    ("ddim", {"steps": 100, "grid": "karras"}),
    ("dpm_solver", {"steps": 30, "order": 3, "grid": "logsnr"}),
    ("dpm_solver", {"steps": 40, "order": 2, "eta": 1.0, "grid": "logsnr"}),
    ("dpm_solver", {"steps": 20, "order": 2, "eta": 1.0}),
]


def statistics(mix, x):
    post = mix.class_log_posterior(x, 0.0, VPSDE())  # VP at t = 0 is p_0 itself
    assign = torch.nn.functional.one_hot(post.argmax(1), mix.num_classes).double()
    return torch.cat([x, x**2, assign, mix.log_prob(x)[:, None]], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/paths_oracle")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mix = make_mixture("gmm2d")
    ref = statistics(mix, mix.sample(40_000, torch.Generator().manual_seed(123), dtype=torch.float64))
    ref_mean, ref_var = ref.mean(0), ref.var(0)
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; n = {args.num}")
    print(f"# command: python {' '.join(sys.argv)}\n")
    paths = list(SDES)
    rows = []
    print("| sampler | " + " | ".join(paths) + " |")
    print("|---" * (len(paths) + 1) + "|")
    for sampler, options in CASES:
        label = sampler + " " + ", ".join(f"{k}={v}" for k, v in options.items())
        cells = []
        for name in paths:
            sde = make_sde(name)
            opts = dict(options)
            if sampler == "ald":
                alpha, sigma = sde.marginal(torch.tensor([1e-3], dtype=torch.float64))
                opts["eps"] = float(sigma / alpha) ** 2
            g = torch.Generator().manual_seed(args.seed)
            score_fn = count_nfe(mix.score_fn(sde))
            start = time.perf_counter()
            x = run_sampler(sampler, score_fn, sde, sde.prior_sampling((args.num, 2), g), generator=g, **opts)
            h = statistics(mix, x.double())
            z = (h.mean(0) - ref_mean) / (ref_var * (1 / args.num + 1 / ref.shape[0])).sqrt()
            gap = h[:, -1].mean() - ref_mean[-1]
            gap_se = (h[:, -1].var() / args.num + ref_var[-1] / ref.shape[0]).sqrt()
            rows.append(
                {
                    "sampler": sampler,
                    "options": options,
                    "path": name,
                    "max_abs_z": z.abs().max().item(),
                    "logp_gap": gap.item(),
                    "logp_gap_se": gap_se.item(),
                    "nfe": score_fn.nfe,
                    "seconds": time.perf_counter() - start,
                }
            )
            cells.append(f"{z.abs().max().item():.1f}")
        print(f"| {label} (NFE {score_fn.nfe}) | " + " | ".join(cells) + " |", flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_json(
        args.out + ".json",
        {"num": args.num, "seed": args.seed, "rows": rows, "machine": platform.machine(), "torch": torch.__version__},
    )


if __name__ == "__main__":
    main()
