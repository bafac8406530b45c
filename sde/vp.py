"""Variance-preserving SDE (Song et al. 2021, Eq. 11) and DDPM, its N-step discretisation (Ho et al. 2020).

VP: dx = -beta(t)/2 x dt + sqrt(beta(t)) dw with linear beta(t) = beta_min + t (beta_max - beta_min).
With B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2, the marginal is
alpha_t = exp(-B(t)/2) and sigma_t^2 = 1 - exp(-B(t)).

DDPM's chain with N steps has beta_i = beta(t_i)/N on t_i = (i - 1)/(N - 1), i = 1..N, so the defaults
(0.1, 20, N = 1000) give betas from 1e-4 to 0.02, alpha-bar_i = prod_{j<=i} (1 - beta_j) and the forward
kernel q(x_i | x_0) = N(sqrt(alpha-bar_i) x_0, (1 - alpha-bar_i) I). `DiscreteVPSDE` IS that chain, read
as a VP SDE whose beta(t) is piecewise constant on the grid t = i/N, so that its marginal at t = i/N is
exactly DDPM's q(x_i | x_0) and its exact transitions are DDPM's steps, while every continuous-time
sampler and the likelihood apply to it unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SDE, append_dims


def check_betas(beta_min: float, beta_max: float) -> None:
    """Raise ValueError unless 0 < beta_min < beta_max."""
    if not (beta_min > 0 and beta_max > beta_min):
        raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")


def ddpm_betas(N: int, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """DDPM's betas beta_i = beta(t_i)/N on t_i = (i-1)/(N-1), i = 1..N (Ho et al. 2020; float64, [N])."""
    if int(N) != N or N < 2:
        raise ValueError(f"number of discrete steps N must be an integer >= 2, got {N}")
    check_betas(beta_min, beta_max)
    t = torch.linspace(0.0, 1.0, int(N), dtype=torch.float64)
    betas = (beta_min + t * (beta_max - beta_min)) / N
    if betas.max() >= 1:
        raise ValueError(f"beta_max / N = {beta_max / N} must be < 1")
    return betas


class VPSDE(SDE):
    """Variance-preserving SDE with a linear beta schedule (Song et al. 2021, Eq. 11)."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        check_betas(beta_min, beta_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: Tensor) -> Tensor:
        """B(t) = int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x.ndim) * x, beta.sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        big_b = self.beta_integral(t)
        return torch.exp(-0.5 * big_b), torch.sqrt(-torch.expm1(-big_b))

    @property
    def prior_std(self) -> float:
        return 1.0

    def config(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


class DiscreteVPSDE(VPSDE):
    """DDPM's N-step chain as a VP SDE with piecewise-constant beta(t) (Ho et al. 2020; Song et al. 2021, App. B).

    On (i-1)/N < t <= i/N, beta(t) = -N log(1 - beta_i), so int beta over that interval is -log(1 - beta_i)
    and alpha_{i/N}^2 = alpha-bar_i exactly.
    """

    name = "ddpm"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(beta_min, beta_max)
        self.N = int(N)
        self.betas = ddpm_betas(self.N, beta_min, beta_max)  # [N], float64
        log_one_minus = torch.log1p(-self.betas)
        # B at the grid points t = i/N, i = 0..N: B_i = -sum_{j<=i} log(1 - beta_j).
        self._big_b = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.cumsum(log_one_minus, 0)])
        self._rate = -log_one_minus * self.N  # piecewise-constant beta(t) on each interval, [N]

    @property
    def alphas_cumprod(self) -> Tensor:
        """DDPM's alpha-bar_i = prod_{j<=i} (1 - beta_j), i = 1..N (float64, [N])."""
        return torch.exp(-self._big_b[1:])

    def _interval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Index i of the interval ((i)/N, (i+1)/N] holding t, and the fraction of it elapsed."""
        u = t.double() * self.N
        i = torch.clamp(torch.ceil(u) - 1, 0, self.N - 1).long()
        return i, u - i

    def beta(self, t: Tensor) -> Tensor:
        i, _ = self._interval(t)
        return self._rate.to(t.device)[i].to(t.dtype)

    def beta_integral(self, t: Tensor) -> Tensor:
        i, frac = self._interval(t)
        big_b, rate = self._big_b.to(t.device), self._rate.to(t.device)
        return (big_b[i] + frac * rate[i] / self.N).to(t.dtype)

    def config(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}
