"""The linear SDEs of score-based diffusion and what every one of them shares (Song et al. 2021, Sec. 3).

An SDE here is pure mathematics: coefficients and closed-form marginals, no network, no step count,
no device state. Every SDE is linear, dx = f(t) x dt + g(t) dw, so conditioned on the data point x_0
its marginal is Gaussian: p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I). Subclasses give the drift and
diffusion, the marginal coefficients (alpha_t, sigma_t) and the prior's standard deviation; the base
class derives the rest (reverse-time SDE, probability-flow ODE, exact one-step transitions, prior).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]  # score_fn(x [B, *D], t [B]) -> score [B, *D]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to `v` until it has `ndim` dimensions (k-diffusion's helper)."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of rank {v.ndim} to rank {ndim}")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def batch_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: [B, *D] -> [B]."""
    return x.flatten(1).sum(1)


def as_time(t: float | Tensor, x: Tensor) -> Tensor:
    """A time as a [B] tensor on x's device and dtype (a float is broadcast to the batch)."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


class SDE:
    """A linear SDE dx = f(t) x dt + g(t) dw on t in [0, T] with closed-form Gaussian marginals."""

    T: float = 1.0
    name: str = "sde"

    # ---- What a subclass defines. -------------------------------------------------------------------------------
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Forward drift f(x, t) [B, *D] and diffusion g(t) [B]."""
        raise NotImplementedError

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t), each shaped like t, with p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)."""
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) that approximates p_T."""
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor's keyword arguments, as plain data (stored in checkpoints)."""
        raise NotImplementedError

    # ---- Derived, shared by every SDE. --------------------------------------------------------------------------
    def marginal_prob(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean [B, *D] and standard deviation [B] of p_t(x_t | x_0)."""
        alpha, sigma = self.marginal(t)
        return append_dims(alpha, x0.ndim) * x0, sigma

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = alpha_t x_0 + sigma_t noise, a draw from p_t(x_t | x_0) given noise ~ N(0, I)."""
        alpha, sigma = self.marginal(t)
        return append_dims(alpha, x0.ndim) * x0 + append_dims(sigma, x0.ndim) * noise

    def prior_sampling(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        """Draw z ~ N(0, prior_std^2 I) of the given shape."""
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype or torch.get_default_dtype())
        return self.prior_std * noise

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I) in nats, [B]."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - batch_sum(z**2) / (2 * s2)

    def reverse(self, x: Tensor, t: Tensor, score: Tensor, probability_flow: bool = False) -> tuple[Tensor, Tensor]:
        """Reverse-time SDE drift f - g^2 s and diffusion g, or the probability-flow ODE drift f - g^2 s / 2
        and zero diffusion (Song et al. 2021, Eqs. 6 and 13)."""
        f, g = self.sde(x, t)
        weight = 0.5 if probability_flow else 1.0
        drift = f - append_dims(g**2, x.ndim) * score * weight
        return drift, (torch.zeros_like(g) if probability_flow else g)

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Exact forward kernel p(x_t | x_s) = N(a x_s, v^2 I) for s <= t, returned as (a, v), each like t.

        A linear SDE's marginals are consistent, so a = alpha_t / alpha_s and v^2 = sigma_t^2 - a^2 sigma_s^2.
        """
        alpha_s, sigma_s = self.marginal(s)
        alpha_t, sigma_t = self.marginal(t)
        a = alpha_t / alpha_s
        v2 = (sigma_t**2 - a**2 * sigma_s**2).clamp(min=0.0)
        return a, v2.sqrt()

    def discretize(self, x: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One forward step from time s to t > s as x_t = x_s + f_i + G_i noise; returns (f_i [B, *D], G_i [B]).

        The step is the SDE's exact transition, so on DDPM's grid the VP-type SDEs give DDPM's
        N(sqrt(1 - beta_i) x, beta_i I) and VE gives SMLD's N(x, (sigma_i^2 - sigma_{i-1}^2) I)
        (Song et al. 2021, Appendix B).
        """
        a, v = self.transition(s, t)
        return (append_dims(a, x.ndim) - 1) * x, v

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_t^2 / sigma_t^2."""
        alpha, sigma = self.marginal(t)
        return alpha**2 / sigma**2

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"
