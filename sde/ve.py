"""Variance-exploding SDE (Song et al. 2021, Eq. 9); SMLD/NCSN's noise ladder is its discretisation.

dx = sqrt(d sigma^2(t)/dt) dw with the geometric sigma(t) = sigma_min (sigma_max / sigma_min)^t, so
g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)). As in NCSN, the process starts from the data already
perturbed by N(0, sigma_min^2), which makes p_t(x_t | x_0) = N(x_0, sigma(t)^2 I) exact for every t in [0, 1];
the NCSN ladder sigma_1 > ... > sigma_L is sigma(t) on an evenly spaced grid of L times.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE


class VESDE(SDE):
    """Variance-exploding SDE with a geometric noise schedule (Song et al. 2021, Eq. 9)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and sigma_min > 0 and sigma_max > sigma_min):
            raise ValueError(f"need finite 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(x), self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        """Closed form: sigma(t) = e^{-lambda}, so t = (-lambda - log sigma_min) / log(sigma_max / sigma_min)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        return ((-lam - math.log(self.sigma_min)) / self._log_ratio).clamp(0.0, self.T)

    def noise_ladder(self, L: int) -> Tensor:
        """NCSN's geometric ladder sigma_1 = sigma_max > ... > sigma_L = sigma_min (Song & Ermon 2019), [L]."""
        if int(L) != L or L < 2:
            raise ValueError(f"number of noise levels must be an integer >= 2, got {L}")
        return self.sigma(torch.linspace(1.0, 0.0, int(L), dtype=torch.float64))

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def config(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
