"""Variance-preserving SDE (Song et al. 2021, Eq. 11) and DDPM, its N-step discretisation (Ho et al. 2020).

VP: dx = -beta(t)/2 x dt + sqrt(beta(t)) dw with linear beta(t) = beta_min + t (beta_max - beta_min).
With B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2, the marginal is
alpha_t = exp(-B(t)/2) and sigma_t^2 = 1 - exp(-B(t)).

DDPM's chain with N steps has beta_i = beta(t_i)/N on t_i = (i - 1)/(N - 1), i = 1..N, so the defaults
(0.1, 20, N = 1000) give betas from 1e-4 to 0.02; `DiscreteVPSDE` (sde/discrete.py) is that chain as a path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE, append_dims


def check_betas(beta_min: float, beta_max: float) -> None:
    """Raise ValueError unless 0 < beta_min < beta_max, both finite."""
    if not (math.isfinite(beta_min) and math.isfinite(beta_max) and beta_min > 0 and beta_max > beta_min):
        raise ValueError(f"need finite 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")


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


class BetaVP(SDE):
    """A variance-preserving path given by its beta(t): dx = -beta/2 x dt + sqrt(beta) dw, alpha = e^{-B/2},
    sigma^2 = 1 - e^{-B} with B(t) = int_0^t beta (subclasses give `beta` and `beta_integral`)."""

    def beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta_integral(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x.ndim) * x, beta.sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        big_b = self.beta_integral(t)
        return torch.exp(-0.5 * big_b), torch.sqrt(-torch.expm1(-big_b))

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(BetaVP):
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

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        """Closed form: B = log(1 + e^{-2 lambda}), the positive root of B(t) = B, clamped to [0, T]."""
        big_b = torch.nn.functional.softplus(-2 * torch.as_tensor(lam, dtype=torch.float64))
        slope = self.beta_max - self.beta_min
        t = 2 * big_b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * big_b))  # stable root
        return t.clamp(0.0, self.T)

    def config(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}
