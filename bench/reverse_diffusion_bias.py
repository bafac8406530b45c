"""Benchmark: sample variance / truth of PC with our reverse-diffusion predictor and score_sde's, with and without the
Langevin corrector, on 784-D N(0, 0.25 I) data with the exact score (VP and VE, 400 samples, seed 0, one thread).
The table is in docs/samplers.md ("Honest defaults").

    nice python bench/reverse_diffusion_bias.py
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from samplers import run_sampler  # noqa: E402
from sde import make_sde  # noqa: E402

DIM, NUM, DATA_VAR = 784, 400, 0.25


def gaussian_score(sde):
    """The exact score of N(0, DATA_VAR I) data under the path."""

    def score(x, t):
        alpha, sigma = sde.marginal(t)
        return -x / (alpha**2 * DATA_VAR + sigma**2)[:, None]

    return score


def main() -> None:
    torch.set_num_threads(1)
    for name, kwargs in [("vp", {}), ("ve", {"sigma_min": 0.01, "sigma_max": 50.0})]:
        sde = make_sde(name, **kwargs)
        for steps in (50, 100, 200, 1000):
            row = []
            for predictor in ("reverse_diffusion", "score_sde_reverse_diffusion"):
                for corrector in ("none", "langevin"):
                    g = torch.Generator().manual_seed(0)
                    x = sde.prior_sampling((NUM, DIM), g).double()
                    out = run_sampler("pc", gaussian_score(sde), sde, x, steps=steps, predictor=predictor,
                                      corrector=corrector, generator=g)  # fmt: skip
                    row.append(f"{predictor} + {corrector}: {float(out.var(0).mean() / DATA_VAR):.4f}")
            print(name, steps, " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
