"""Benchmark: probability-flow ODE log-likelihood accuracy against NFE and wall time (and bits/dim on MNIST).

Analytic part: a 784-dimensional correlated Gaussian (data.toy.make_mixture("gaussian", 784)) whose exact score
and exact log p_{t_min} are closed-form, so the only errors are the solver's and Hutchinson's. For each setting
it reports the NFE, the wall time, and the error in bits/dim (error in nats / (D ln 2)) of the ODE estimate
against the exact log p_{t_min}(x): its mean over examples (the bias, with its standard error) and its RMS (the
per-image error). "ode err" swaps the prior for the exact log p_T(z), isolating the solver and the divergence
estimate from the prior mismatch. Writes bench/results/likelihood_analytic.{json,md}.

    nice -n 10 python bench/likelihood.py                      # analytic target
    nice -n 10 python bench/likelihood.py --checkpoint runs/vp/checkpoints/ckpt_003000.pt --mnist-root data/mnist

With --checkpoint/--mnist-root it evaluates bits/dim (ODE at several tolerances, and the discrete bound) on the
first --num-images MNIST test digits instead and writes bench/results/likelihood_mnist.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from likelihood import log_likelihood_per_probe  # noqa: E402
from sde import make_sde  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# (label, SDE, options). First the solver alone (exact divergence: D vector-Jacobian products per evaluation),
# then Hutchinson's estimator as used on images (one solve per image, K probes).
EXACT = {"divergence": "exact"}
SWEEP = [(f"dopri5 tol={tol:g}, exact div", "vp", {"rtol": tol, "atol": tol, **EXACT}) for tol in (1e-2, 1e-3, 1e-4)]
SWEEP += [
    ("dopri5 tol=1e-5, exact div", "vp", EXACT),
    ("dopri5 tol=1e-5 logsnr-time, exact div", "vp", {"time_variable": "logsnr", **EXACT}),
    ("VE dopri5 tol=1e-5, exact div", "ve", EXACT),
    ("DDPM chain dopri5 tol=1e-5 (auto: logsnr-time), exact div", "ddpm", EXACT),
    ("dopri5 tol=1e-3, 1 Rademacher probe", "vp", {"rtol": 1e-3, "atol": 1e-3}),
    ("dopri5 tol=1e-5, 1 Rademacher probe", "vp", {}),
    ("dopri5 tol=1e-5, 1 Gaussian probe", "vp", {"probe": "gaussian"}),
    ("dopri5 tol=1e-5, 4 Rademacher probes", "vp", {"num_probes": 4}),
    ("sub-VP dopri5 tol=1e-5, 1 Rademacher probe", "subvp", {}),
    ("DDPM chain dopri5 tol=1e-5 (auto: logsnr-time), 1 Rademacher probe", "ddpm", {}),
    ("DDPM chain dopri5 tol=1e-5 t-time, 1 Rademacher probe", "ddpm", {"time_variable": "t"}),
]


class GaussianOracle:
    """Exact score and log-density of N(mu, C) under an SDE via C = U diag(lam) U^T (fast for D = 784)."""

    def __init__(self, mean, cov, sde, dtype):
        lam, u = torch.linalg.eigh(cov)
        self.mu, self.lam, self.u, self.sde, self.dtype = mean, lam, u, sde, dtype
        self.u_f, self.lam_f, self.mu_f = u.to(dtype), lam.to(dtype), mean.to(dtype)

    def score(self, x, t):
        alpha, sigma = self.sde.marginal(t)
        var = alpha[:, None] ** 2 * self.lam_f + sigma[:, None] ** 2  # eigenvalues of C_t, [B, D]
        proj = (x - alpha[:, None] * self.mu_f) @ self.u_f
        return -(proj / var) @ self.u_f.T

    def log_prob(self, x, t: float):
        x, tt = x.double(), torch.full((x.shape[0],), t, dtype=torch.float64)
        alpha, sigma = self.sde.marginal(tt)
        var = alpha[:, None] ** 2 * self.lam + sigma[:, None] ** 2
        proj = (x - alpha[:, None] * self.mu) @ self.u
        return -0.5 * (torch.log(2 * math.pi * var) + proj**2 / var).sum(1)


def run_analytic(args) -> list[dict]:
    """The sweep on the 784-dimensional correlated Gaussian."""
    from data.toy import make_mixture

    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    mix = make_mixture("gaussian", args.dim, seed=0)
    x = mix.sample(args.num_examples, torch.Generator().manual_seed(1), dtype=dtype)
    rows = []
    for label, sde_name, options in SWEEP:
        sde = make_sde(sde_name)
        oracle = GaussianOracle(mix.means[0], mix.covs[0], sde, dtype)
        if not rows:  # the fast oracle against the mixture's own exact log-density, once
            torch.testing.assert_close(oracle.log_prob(x[:2], 0.3), mix.log_prob(x[:2].double(), 0.3, sde))
        opts = {"t_min": args.t_min, "generator": torch.Generator().manual_seed(2), **options}
        start, cpu_start = time.perf_counter(), time.process_time()
        logp, z, nfe = log_likelihood_per_probe(oracle.score, sde, x, **opts)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        logp = logp.double().mean(1)
        exact = oracle.log_prob(x, args.t_min)
        err = (exact - logp) / (args.dim * math.log(2))  # bits/dim error (positive: too pessimistic)
        ode_err = (exact - (logp - sde.prior_logp(z.double()) + oracle.log_prob(z, sde.T))) / (args.dim * math.log(2))
        rows.append(
            {
                "setting": label,
                "sde": sde_name,
                "nfe": nfe,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "bpd_exact": (-exact / (args.dim * math.log(2))).mean().item(),
                "err_mean": err.mean().item(),
                "err_stderr": err.std().item() / math.sqrt(len(err)),
                "err_rms": err.pow(2).mean().sqrt().item(),
                "ode_err_mean": ode_err.mean().item(),
                "ode_err_rms": ode_err.pow(2).mean().sqrt().item(),
            }
        )
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| setting | NFE | wall (s) | CPU (s) | err mean +- s.e. (bits/dim) | err RMS | ode err mean | ode err RMS "
    "|\n"
    "|---|---|---|---|---|---|---|---|"
)


def format_row(r: dict) -> str:
    return (
        f"| {r['setting']} | {r['nfe']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
        f"{r['err_mean']:+.2e} +- {r['err_stderr']:.1e} | "
        f"{r['err_rms']:.1e} | {r['ode_err_mean']:+.2e} | {r['ode_err_rms']:.1e} |"
    )


def run_mnist(args) -> list[dict]:
    """Bits/dim of a trained checkpoint on the first test digits: the ODE at several tolerances, then the bound."""
    from compose.checkpoints import load_score_model
    from data.mnist import load_mnist
    from evaluation.likelihood_eval import evaluate_bpd

    device = torch.device(args.device)
    model, _ = load_score_model(args.checkpoint, device, use_ema=True)
    model.requires_grad_(False)
    images, _, desc = load_mnist("idx", args.mnist_root, "test")
    images = torch.from_numpy(images[: args.num_images])[:, None]
    print(desc, flush=True)
    rows = []
    common = {"batch_size": args.batch_size, "num_probes": args.num_probes, "num_dequant": args.num_dequant}
    for tol in args.tolerances:
        res = evaluate_bpd(
            model.score_fn(), model.sde, images, device=device, bound=False, rtol=tol, atol=tol, **common
        )
        rows.append(
            {
                "setting": f"ODE dopri5 tol={tol:g}",
                "bpd": res["ode_bpd"],
                "stderr": res["ode_bpd_stderr"],
                "probe_stderr": res["ode_bpd_probe_stderr"],
                "nfe": res["ode_nfe_mean"],
                "seconds": res["ode_seconds"],
            }
        )
        print(rows[-1], flush=True)
    if args.no_bound:
        return rows
    res = evaluate_bpd(
        model.score_fn(),
        model.sde,
        images,
        device=device,
        bound=True,
        rtol=1e-2,
        atol=1e-2,
        method="euler",
        bound_steps=args.bound_steps,
        **common,
    )
    rows.append(
        {
            "setting": f"bound {args.bound_steps} steps",
            "bpd": res["bound_bpd_total"],
            "stderr": res["bound_bpd_total_stderr"],
            "prior": res["bound_bpd_prior"],
            "diffusion": res["bound_bpd_diffusion"],
            "decoder": res["bound_bpd_decoder"],
            "seconds": res["bound_seconds"],
        }
    )
    print(rows[-1], flush=True)
    return rows


def mnist_table(rows: list[dict], args) -> str:
    """Markdown table of the MNIST rows: bits/dim with its standard error over images, NFE, seconds."""
    lines = [
        f"{args.num_images} real MNIST test digits, {args.num_probes} Hutchinson probe(s), {args.num_dequant} "
        "dequantisation draw(s) per image; s.e. = std over images / sqrt(N)",
        "",
        "| setting | bits/dim | s.e. | NFE | seconds | bound terms (prior / diffusion / decoder) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        terms = f"{r['prior']:.2e} / {r['diffusion']:.4f} / {r['decoder']:.4f}" if "prior" in r else "-"
        lines.append(
            f"| {r['setting']} | {r['bpd']:.4f} | {r['stderr']:.4f} | {r.get('nfe', '-')} | "
            f"{r['seconds']:.0f} | {terms} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--num-examples", type=int, default=16)
    parser.add_argument("--t-min", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--mnist-root", default="")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-probes", type=int, default=1)
    parser.add_argument("--num-dequant", type=int, default=1)
    parser.add_argument(
        "--tolerances", type=float, nargs="+", default=None, help="default: 1e-3 1e-5 (MNIST), 1e-3..1e-6 (--compare)"
    )
    parser.add_argument("--bound-steps", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-bound", action="store_true", help="MNIST: skip the discrete variational bound")
    parser.add_argument("--compare", action="store_true", help="side by side with score_sde's algorithm")
    parser.add_argument("--targets", nargs="+", default=["diagonal", "correlated"])
    parser.add_argument("--sdes", nargs="+", default=["vp", "subvp", "ve", "ddpm"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="--compare on the analytic targets: our methods beside score_sde's (default: dopri5, exponential, and "
        "exponential in t on VP / sub-VP); any adaptive torchdiffeq method, 'exponential' or 'exponential-t'",
    )
    parser.add_argument(
        "--i-controller",
        action="store_true",
        help="the exponential integrator's step size from its error alone (PI_GAINS = (1, 0)), as before the PI "
        "controller but with its no-growth-after-a-rejection rule: the 'before' rows of docs/likelihood.md",
    )
    parser.add_argument("--name", default="", help="results file name (default: by mode)")
    parser.add_argument("--results-dir", default=RESULTS, help="folder of the .json and .md results")
    args = parser.parse_args(argv)
    if args.tolerances is None:
        args.tolerances = (
            [1e-3, 1e-4, 1e-5, 1e-6]
            if args.compare and not args.checkpoint
            else [1e-2, 1e-3, 1e-4]
            if args.compare
            else [1e-3, 1e-5]
        )
    if bool(args.checkpoint) != bool(args.mnist_root):
        parser.error("--checkpoint and --mnist-root go together")
    if args.methods is not None:
        from bench.likelihood_compare import COMPARE_METHODS

        bad = [m for m in args.methods if m not in COMPARE_METHODS]
        if bad or not args.compare or args.checkpoint:
            parser.error(
                f"--methods {' '.join(args.methods)}: only with --compare on the analytic targets, "
                f"from {list(COMPARE_METHODS)}"
            )
    with _step_controller(args.i_controller):
        _run(args)


@contextlib.contextmanager
def _step_controller(i_controller: bool):
    """The exponential integrator's PI step-size controller, or (--i-controller) its error-alone controller, for
    this run only."""
    import likelihood.exponential as exponential

    saved = exponential.PI_GAINS
    exponential.PI_GAINS = (1.0, 0.0) if i_controller else saved
    try:
        yield
    finally:
        exponential.PI_GAINS = saved


def _run(args) -> None:
    """The run main() parsed and checked."""
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    command = "python " + " ".join(sys.argv)
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    os.makedirs(args.results_dir, exist_ok=True)
    if args.compare and args.checkpoint:
        from bench.likelihood_compare import mnist_compare_table, run_mnist_compare

        rows = run_mnist_compare(args)
        name = args.name or "likelihood_mnist_compare"
        with open(os.path.join(args.results_dir, f"{name}.json"), "w") as f:
            json.dump({"machine": machine, "command": command, "args": vars(args), "rows": rows}, f, indent=2)
        with open(os.path.join(args.results_dir, f"{name}.md"), "w") as f:
            f.write(f"machine: {machine}\n\ncommand: `{command}`\n\n{mnist_compare_table(rows)}\n")
        print(mnist_compare_table(rows))
        return
    if args.compare and not args.checkpoint:
        from bench.likelihood_compare import COMPARE_HEADER, format_compare, matched_table, run_compare

        print(COMPARE_HEADER)
        rows = run_compare(args, GaussianOracle)
        name = args.name or "likelihood_compare"
        with open(os.path.join(args.results_dir, f"{name}.json"), "w") as f:
            json.dump({"machine": machine, "command": command, "args": vars(args), "rows": rows}, f, indent=2)
        with open(os.path.join(args.results_dir, f"{name}.md"), "w") as f:
            f.write(f"machine: {machine}\n\ncommand: `{command}`\n\n")
            f.write(COMPARE_HEADER + "\n" + "\n".join(format_compare(r) for r in rows) + "\n\n")
            f.write(matched_table(rows) + "\n")
        print(matched_table(rows))
        return
    name = args.name or ("likelihood_mnist" if args.checkpoint else "likelihood_analytic")
    if not args.checkpoint:
        print(HEADER)
    rows = run_mnist(args) if args.checkpoint else run_analytic(args)
    with open(os.path.join(args.results_dir, f"{name}.json"), "w") as f:
        json.dump({"machine": machine, "command": command, "args": vars(args), "rows": rows}, f, indent=2)
    with open(os.path.join(args.results_dir, f"{name}.md"), "w") as f:
        f.write(f"machine: {machine}\n\ncommand: `{command}`\n\n")
        f.write(
            (HEADER + "\n" + "\n".join(format_row(r) for r in rows)) if not args.checkpoint else mnist_table(rows, args)
        )
        f.write("\n")


if __name__ == "__main__":
    main()
