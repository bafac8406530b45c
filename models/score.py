"""The one wrapper that turns any noise-prediction network into a score model (Song et al. 2021; Ho et al. 2020).

A network eps_theta(x_t, t) predicts the noise in x_t = alpha_t x_0 + sigma_t noise. The score follows as
s(x, t) = -eps_theta(x, t) / sigma_t and Tweedie's denoiser as x0_hat = (x - sigma_t eps_theta) / alpha_t.
The same wrapper serves VP, sub-VP, VE and DDPM: it reads only sde.marginal(t). It is also the single place
of the network's preconditioning (input scaled to unit variance, noise level given as log(sigma_t/alpha_t))
and of the precision policy (bf16 autocast around the network on request, fp32 everywhere else).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sde import SDE, append_dims, as_time

PRECISIONS = ("fp32", "bf16")


class ScoreModel(nn.Module):
    """Score s(x, t) = -eps(x, t) / sigma_t and denoiser of an eps-network `net(x, noise_label, y=None)`."""

    def __init__(self, net: nn.Module, sde: SDE, precision: str = "fp32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
        self.net, self.sde, self.precision = net, sde, precision

    @property
    def num_classes(self) -> int:
        """Number of classes the network is conditioned on (0: unconditional)."""
        return int(getattr(self.net, "num_classes", 0))

    def eps(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The network's noise prediction eps_theta(x_t, t) [B, *D] (used by the losses)."""
        t = as_time(t, x)
        alpha, sigma = self.sde.marginal(t)
        c_in = append_dims(torch.rsqrt(alpha**2 + sigma**2), x.ndim)  # x_t has unit variance for unit-variance data
        noise_label = torch.log(sigma) - torch.log(alpha)  # log noise-to-signal ratio, [B]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            eps = self.net(c_in * x, noise_label, y) if y is not None else self.net(c_in * x, noise_label)
        return eps.to(x.dtype)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The score s_theta(x, t) = -eps_theta(x, t) / sigma_t [B, *D]."""
        t = as_time(t, x)
        _, sigma = self.sde.marginal(t)
        return -self.eps(x, t, y) / append_dims(sigma, x.ndim)

    def denoise(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """Tweedie's x0_hat = (x - sigma_t eps_theta) / alpha_t = (x + sigma_t^2 s) / alpha_t [B, *D]."""
        t = as_time(t, x)
        alpha, sigma = self.sde.marginal(t)
        return (x - append_dims(sigma, x.ndim) * self.eps(x, t, y)) / append_dims(alpha, x.ndim)

    def score_fn(self, y: Tensor | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """The score as the samplers' `score_fn(x, t)`, with the labels y (if any) fixed."""
        return lambda x, t: self(x, t, y)
