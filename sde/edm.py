"""EDM's path sigma(t) = t, alpha(t) = 1 (Karras et al. 2022, Sec. 4 and Table 1).

Time IS the noise level: x_t = x_0 + t noise on t in [0, T = sigma_max], the SDE dx = sqrt(2 t) dw, and the
probability-flow ODE dx/dt = -t score = (x - D(x; t)) / t of EDM's Eq. 3 with their denoiser D. Sample from
sigma_max = 80 down to sigma_min = 0.002 (`t_min`), EDM's defaults for images in [-1, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE


class EDMSDE(SDE):
    """sigma(t) = t, alpha = 1 on [0, sigma_max] (Karras et al. 2022)."""

    name = "edm"
    default_grid = "karras"  # uniform in t = sigma would spend almost no steps at small noise

    def __init__(self, sigma_max: float = 80.0):
        if not (math.isfinite(sigma_max) and sigma_max > 0):
            raise ValueError(f"need a finite sigma_max > 0, got sigma_max={sigma_max}")
        self.sigma_max = float(sigma_max)
        self.T = self.sigma_max

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(x), torch.sqrt(2 * t)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        return torch.exp(-torch.as_tensor(lam, dtype=torch.float64)).clamp(0.0, self.T)

    def config(self) -> dict:
        return {"name": self.name, "sigma_max": self.sigma_max}
