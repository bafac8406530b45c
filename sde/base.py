"""The Gaussian diffusion paths of score-based diffusion and the algebra they share (Song et al. 2021, Sec. 3).

A path is pure mathematics: closed-form marginals, no network, no step count, no device state. Conditioned on
the data point x_0 every path here is Gaussian, p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), and it is the
marginal law of the linear SDE dx = f(t) x dt + g(t) dw with

    f(t) = d log alpha_t / dt,        g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2       (Kingma et al. 2021, App. A).

So a new path is `marginal(t) -> (alpha_t, sigma_t)` and nothing else (T and `config` if it has parameters): the
base class derives f and g by automatic differentiation of the marginals (a path may give them in closed form
instead), the reverse-time SDE and probability-flow ODE, exact transitions, the prior, and the shared Gaussian
algebra every sampler and the likelihood use, each in one place: the half log-SNR lambda_t = log(alpha_t /
sigma_t) and its inverse, Tweedie's denoiser, and the posterior q(x_s | x_t, x_0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

STEP_VARIANCES = ("forward", "posterior")  # reverse-step variance: the forward kernel's v^2 (beta_t) or beta-tilde_t
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
    """A Gaussian diffusion path on t in [0, T]: p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), lambda_t decreasing."""

    T: float = 1.0
    name: str = "sde"
    default_grid: str = "uniform"  # the time grid of the many-step samplers when none is named (samplers/grids.py)
    # The time grid of the few-step solvers (DDIM, DPM-Solver++, UniPC, EDM, fixed-step ODE) when none is named:
    # log-SNR spacing, measured the least biased at 10-20 steps on every path but the two below (docs/samplers.md).
    solver_grid: str = "logsnr"

    # ---- What a path defines. -----------------------------------------------------------------------------------
    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t), each shaped like t, with p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)."""
        raise NotImplementedError(f"{type(self).__name__} does not define marginal(t) -> (alpha_t, sigma_t)")

    def config(self) -> dict:
        """The constructor's keyword arguments with the path's name, as plain data (stored in checkpoints)."""
        return {"name": self.name}

    # ---- Derived from the marginals; a path may override any of them with a closed form. ------------------------
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(f(t), g(t)^2) of the linear SDE with these marginals: f = d log alpha/dt, g^2 = d sigma^2/dt - 2 f sigma^2.

        Differentiated through `marginal` by autograd in float64 (also under no_grad and inference mode)."""
        with torch.inference_mode(False), torch.enable_grad():
            u = t.detach().to(torch.float64).clone().requires_grad_(True)
            alpha, sigma = self.marginal(u)
            log_alpha, var = torch.log(alpha), sigma**2
            f, dvar = (
                torch.autograd.grad(out.sum(), u, retain_graph=True)[0] if out.requires_grad else torch.zeros_like(u)
                for out in (log_alpha, var)
            )  # a constant alpha (VE) has no graph
        f, g2 = f.detach(), (dvar - 2 * f * var).detach().clamp_min(0.0)
        return f.to(t.dtype), g2.to(t.dtype)

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Forward drift f(t) x [B, *D] and diffusion g(t) [B]."""
        f, g2 = self.coefficients(t)
        return append_dims(f, x.ndim) * x, g2.sqrt()

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) that approximates p_T (default: sigma_T)."""
        return float(self.marginal(torch.tensor([float(self.T)], dtype=torch.float64))[1])

    def logsnr(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio lambda_t = log(alpha_t / sigma_t) (Lu et al. 2022, Sec. 3.1)."""
        alpha, sigma = self.marginal(t)
        return torch.log(alpha) - torch.log(sigma)

    def t_from_logsnr(self, lam: Tensor) -> Tensor:
        """The time t in [0, T] with lambda_t = lam, by bisection in float64 (lambda_t decreases strictly)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo, hi = torch.zeros_like(lam), torch.full_like(lam, float(self.T))
        for _ in range(64):
            mid = (lo + hi) / 2
            later = self.logsnr(mid) > lam  # still too little noise: the root lies later
            lo, hi = torch.where(later, mid, lo), torch.where(later, hi, mid)
        return (lo + hi) / 2

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_t^2 / sigma_t^2 = exp(2 lambda_t)."""
        alpha, sigma = self.marginal(t)
        return alpha**2 / sigma**2

    def denoise(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Tweedie's denoiser x0_hat = E[x_0 | x_t] = (x_t + sigma_t^2 score) / alpha_t (Efron 2011)."""
        alpha, sigma = self.marginal(t)
        return (x + append_dims(sigma**2, x.ndim) * score) / append_dims(alpha, x.ndim)

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Exact forward kernel p(x_t | x_s) = N(a x_s, v^2 I) for s <= t, returned as (a, v), each like t.

        The marginals are consistent, so a = alpha_t / alpha_s and v^2 = sigma_t^2 - a^2 sigma_s^2.
        """
        alpha_s, sigma_s = self.marginal(s)
        alpha_t, sigma_t = self.marginal(t)
        a = alpha_t / alpha_s
        v2 = (sigma_t**2 - a**2 * sigma_s**2).clamp(min=0.0)
        return a, v2.sqrt()

    def posterior(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_s | x_t, x_0) = N(c_x x_t + c_0 x_0, var I) for s < t: returns (c_x, c_0, var), each like t.

        With x_t = a x_s + v noise: c_x = a sigma_s^2 / sigma_t^2, c_0 = alpha_s v^2 / sigma_t^2 and
        var = sigma_s^2 v^2 / sigma_t^2 (Ho et al. 2020, Eqs. 6-7, where var is beta-tilde).
        """
        a, v = self.transition(s, t)
        alpha_s, sigma_s = self.marginal(s)
        _, sigma_t = self.marginal(t)
        return a * sigma_s**2 / sigma_t**2, alpha_s * v**2 / sigma_t**2, sigma_s**2 * v**2 / sigma_t**2

    def step_variance(self, s: Tensor, t: Tensor, kind: str = "posterior") -> Tensor:
        """Variance of a reverse step t -> s < t, like t: the posterior's beta-tilde ("posterior") or the forward
        kernel's v^2 ("forward", DDPM's sigma_t^2 = beta_t) (Ho et al. 2020, Sec. 3.2)."""
        if kind not in STEP_VARIANCES:
            raise ValueError(f"unknown step variance {kind!r}; valid: {list(STEP_VARIANCES)}")
        return self.posterior(s, t)[2] if kind == "posterior" else self.transition(s, t)[1] ** 2

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

    def discretize(self, x: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One forward step from time s to t > s as x_t = x_s + f_i + G_i noise; returns (f_i [B, *D], G_i [B]).

        The step is the path's exact transition, so on DDPM's grid the VP-type paths give DDPM's
        N(sqrt(1 - beta_i) x, beta_i I) and VE gives SMLD's N(x, (sigma_i^2 - sigma_{i-1}^2) I)
        (Song et al. 2021, Appendix B).
        """
        a, v = self.transition(s, t)
        return (append_dims(a, x.ndim) - 1) * x, v

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def require(sde: SDE, *names: str, who: str = "this sampler") -> None:
    """Raise ValueError naming the first of `names` (methods or properties) that `sde` lacks or cannot evaluate.

    A path must at least give `marginal`; everything else has a default derived from it, so this catches an
    object that is not a path, or a path whose method raises NotImplementedError, before any network call."""
    probe = torch.tensor([0.5 * float(getattr(sde, "T", 1.0))], dtype=torch.float64)
    for name in ("marginal", *names):
        member = getattr(sde, name, None) if name != "prior_std" else None
        try:
            if name == "prior_std":
                float(sde.prior_std)
            elif not callable(member):
                raise NotImplementedError
            elif name in ("marginal", "logsnr", "coefficients", "snr"):
                member(probe)
            elif name in ("transition", "posterior"):
                member(probe / 2, probe)
        except NotImplementedError:
            raise ValueError(f"{who} needs the path's {name}, which {type(sde).__name__} does not provide") from None
