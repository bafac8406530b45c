"""Benchmark: torch.compile end to end in `--mode eval` (likelihood: forward with graph + VJP) and `--mode sample`
(forward only), on a trained MNIST checkpoint, batch 64.

    nice python bench/compile.py --checkpoint runs/edm_mnist --mnist-root /work/shared/data/mnist

Prints, for compile off and on: the first solve (which compiles) and a second one, the calls, and how far the
compiled network moves log p (through the adaptive steps); then the same for 20 DPM-Solver++(2M) steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compose.checkpoints import score_model_from  # noqa: E402
from data.datasets import dequantize_and_scale  # noqa: E402
from data.mnist import load_mnist  # noqa: E402
from infra.checkpoint import read_checkpoint  # noqa: E402
from likelihood import log_likelihood_per_probe  # noqa: E402
from samplers import run_sampler  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="work dir or checkpoint file")
    parser.add_argument("--mnist-root", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path, ckpt = read_checkpoint(args.checkpoint)
    images, _, _ = load_mnist("idx", args.mnist_root, "test")
    pixels = torch.from_numpy(np.asarray(images[:64]))[:, None]
    x = dequantize_and_scale(pixels, generator=torch.Generator().manual_seed(0))
    base = None
    for compile in (False, True):
        model, _ = score_model_from(path, ckpt, "cpu", compile=compile)
        model.requires_grad_(False)
        f, sde = model.score_fn(), model.sde

        def solve(f=f, sde=sde):
            return log_likelihood_per_probe(
                f,
                sde,
                x,
                rtol=args.tol,
                atol=args.tol,
                method="exponential",
                generator=torch.Generator().manual_seed(1),
            )

        (_, _, _), first = timed(solve)
        (logp, _, calls), second = timed(solve)
        moved = "" if base is None else f", log p moved by up to {float((logp - base).abs().max()):.1e} nats"
        base = logp if base is None else base
        print(f"likelihood, compile={compile}: first {first:.1f} s, second {second:.1f} s, {calls} calls{moved}")

        def sample(f=f, sde=sde):
            with torch.no_grad():
                noise = sde.prior_sampling((64, 1, 28, 28), generator=torch.Generator().manual_seed(0))
                return run_sampler("dpm_solver", f, sde, noise, steps=20, generator=torch.Generator().manual_seed(0))

        _, first = timed(sample)
        _, second = timed(sample)
        print(f"sampling (DPM-Solver++ 2M, 20 steps), compile={compile}: first {first:.1f} s, second {second:.1f} s")


if __name__ == "__main__":
    main()
