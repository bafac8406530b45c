"""Sub-variance-preserving SDE (Song et al. 2021, Eq. 12).

dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw, with B(t) = int_0^t beta. Its marginal has the
VP mean alpha_t = exp(-B(t)/2) and a smaller standard deviation sigma_t = 1 - exp(-B(t)), which is why its
likelihoods are often better.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SDE, append_dims
from .vp import VPSDE


class SubVPSDE(VPSDE):
    """Sub-VP SDE with a linear beta schedule (Song et al. 2021, Eq. 12)."""

    name = "subvp"

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        g2 = beta * -torch.expm1(-2 * self.beta_integral(t))
        return -0.5 * append_dims(beta, x.ndim) * x, g2.sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        big_b = self.beta_integral(t)
        return torch.exp(-0.5 * big_b), -torch.expm1(-big_b)

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        return SDE.t_from_logsnr(self, lam)  # VP's closed form does not hold here: bisection
