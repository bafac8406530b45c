"""A discrete diffusion chain read as a continuous Gaussian path (Ho et al. 2020; Song et al. 2021, App. B).

A chain of N steps with variances beta_1..beta_N has q(x_i | x_0) = N(sqrt(alpha-bar_i) x_0, (1 - alpha-bar_i) I),
alpha-bar_i = prod_{j<=i} (1 - beta_j). `DiscreteChain` is the VP path whose beta(t) is piecewise constant on the
grid t = i/N, -N log(1 - beta_i) on ((i-1)/N, i/N], so its marginal at t = i/N is exactly the chain's q(x_i | x_0)
and its exact transitions between grid times are the chain's steps, while every continuous-time sampler and the
likelihood apply to it unchanged. DDPM's linear betas (`DiscreteVPSDE`) and iDDPM's cosine betas
(`sde.cosine.CosineVPSDE`) are two such chains.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .vp import BetaVP, ddpm_betas


def respaced_steps(n: int, count: int) -> list[int]:
    """The `count` steps (1-based, of 1..n) improved DDPM's respacing keeps (Nichol & Dhariwal 2021, Sec. 4; its
    `space_timesteps(n, str(count))`): 0-based positions stepped by (n - 1) / (count - 1) from 0, accumulated in
    floating point and rounded half to even as its code does, so the first and the last step are always kept."""
    if not 1 <= count <= n:
        raise ValueError(f"cannot keep {count} of a chain's {n} steps; allowed: 1..{n}")
    stride = (n - 1) / (count - 1) if count > 1 else 1.0
    steps, position = [], 0.0
    for _ in range(count):
        steps.append(round(position) + 1)
        position += stride
    return steps


class DiscreteChain(BetaVP):
    """The VP path with piecewise-constant beta(t) through a chain's betas [N] (each in (0, 1))."""

    def __init__(self, betas: Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("a discrete chain needs N >= 2 betas, each in (0, 1)")
        self.N = int(betas.numel())
        self.betas = betas  # [N], float64
        log_one_minus = torch.log1p(-betas)
        # B at the grid points t = i/N, i = 0..N: B_i = -sum_{j<=i} log(1 - beta_j).
        self._big_b = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.cumsum(log_one_minus, 0)])
        self._rate = -log_one_minus * self.N  # piecewise-constant beta(t) on each interval, [N]

    @property
    def alphas_cumprod(self) -> Tensor:
        """The chain's alpha-bar_i = prod_{j<=i} (1 - beta_j), i = 1..N (float64, [N])."""
        return torch.exp(-self._big_b[1:])

    def _interval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Index i of the interval (i/N, (i+1)/N] holding t, and the fraction of it elapsed."""
        u = t.double() * self.N
        i = torch.clamp(torch.ceil(u) - 1, 0, self.N - 1).long()
        return i, u - i

    def beta(self, t: Tensor) -> Tensor:
        """The piecewise-constant beta(t) = -N log(1 - beta_i) on ((i-1)/N, i/N]."""
        i, _ = self._interval(t)
        return self._rate.to(t.device)[i].to(t.dtype)

    def beta_integral(self, t: Tensor) -> Tensor:
        """B(t) = int_0^t beta(s) ds, piecewise linear through the chain's -log alpha-bar_i."""
        i, frac = self._interval(t)
        big_b, rate = self._big_b.to(t.device), self._rate.to(t.device)
        return (big_b[i] + frac * rate[i] / self.N).to(t.dtype)

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        """Closed form: B = log(1 + e^{-2 lambda}), then the interval of the piecewise-linear B(t) holding it."""
        big_b = torch.nn.functional.softplus(-2 * torch.as_tensor(lam, dtype=torch.float64))
        table = self._big_b.to(big_b.device)
        i = (torch.searchsorted(table, big_b.contiguous()) - 1).clamp(0, self.N - 1)
        frac = ((big_b - table[i]) / (table[i + 1] - table[i])).clamp(0, 1)
        return (i + frac) / self.N


class DiscreteVPSDE(DiscreteChain):
    """DDPM's N-step chain with linear betas as a path (Ho et al. 2020; Song et al. 2021, App. B)."""

    name = "ddpm"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(ddpm_betas(N, beta_min, beta_max))
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def config(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}
