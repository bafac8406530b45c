"""The linear interpolant x_t = (1 - t) x_0 + t noise of flow matching and rectified flow (Lipman et al. 2023,
Liu et al. 2023): alpha(t) = 1 - t, sigma(t) = t.

Its probability-flow ODE is the flow-matching ODE: f(t) = -1 / (1 - t), g(t)^2 = 2 t / (1 - t), and with the
score s = -eps / t the drift f x - g^2 s / 2 is eps - x_0 = the velocity v. At t = 1 alpha vanishes, so the
data prediction (x + sigma^2 s) / alpha and f are singular there: the path stops at T = 0.999 (where p_T differs
from its prior N(0, T^2 I) by a KL of order (1 - T)^2 |x_0|^2 / 2, below VP's at its T = 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SDE, append_dims


class RectifiedFlow(SDE):
    """alpha = 1 - t, sigma = t on [0, T], T < 1 (Lipman et al. 2023; Liu et al. 2023)."""

    name = "rectified_flow"
    solver_grid = "quadratic"  # measured least biased for the few-step solvers here (docs/samplers.md)

    def __init__(self, T: float = 0.999):
        if not (math.isfinite(T) and 0 < T < 1):
            raise ValueError(f"the rectified-flow path needs 0 < T < 1 (alpha_1 = 0), got T={T}")
        self.T = float(T)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, t

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return -append_dims(1 / (1 - t), x.ndim) * x, torch.sqrt(2 * t / (1 - t))

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-torch.as_tensor(lam, dtype=torch.float64)).clamp(0.0, self.T)

    def config(self) -> dict:
        return {"name": self.name, "T": self.T}
