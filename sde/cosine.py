"""The cosine schedule of improved DDPM (Nichol & Dhariwal 2021, Eq. 17) as a discrete VP chain.

alpha-bar(t) = f(t) / f(0) with f(t) = cos((t + s) / (1 + s) * pi / 2)^2, s = 0.008, and the chain's betas
beta_i = 1 - alpha-bar(i/N) / alpha-bar((i-1)/N), clipped to at most 0.999 "to prevent singularities at the end of
the diffusion process near t = T" (their Sec. 3.2). The clipping keeps alpha-bar_N > 0 (2.4e-9 at N = 1000), so
lambda_T is finite and every sampler can start at T. These are the betas of diffusers' "squaredcos_cap_v2".
"""

from __future__ import annotations

import math

import torch

from .discrete import DiscreteChain


def cosine_betas(N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """iDDPM's betas [N] (float64): 1 - alpha-bar(i/N) / alpha-bar((i-1)/N), clipped at max_beta."""
    if int(N) != N or N < 2:
        raise ValueError(f"number of discrete steps N must be an integer >= 2, got {N}")
    if not (math.isfinite(s) and s >= 0 and 0 < max_beta < 1):
        raise ValueError(f"need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}")
    t = torch.arange(int(N) + 1, dtype=torch.float64) / N
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


class CosineVPSDE(DiscreteChain):
    """iDDPM's cosine-schedule chain of N steps as a path (Nichol & Dhariwal 2021)."""

    name = "cosine"
    solver_grid = "quadratic"  # measured least biased for the few-step solvers here (docs/samplers.md)

    def __init__(self, N: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        super().__init__(cosine_betas(N, s, max_beta))
        self.s, self.max_beta = float(s), float(max_beta)

    def config(self) -> dict:
        return {"name": self.name, "N": self.N, "s": self.s, "max_beta": self.max_beta}
