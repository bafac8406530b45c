"""The one wrapper that turns a network into a score model for any Gaussian path (Song et al. 2021; Karras et al.
2022).

Every path has x_t = alpha_t x_0 + sigma_t noise. Whatever the network's parameterisation, the wrapper exposes the
noise prediction eps(x, t), the score s(x, t) = -eps / sigma_t and Tweedie's denoiser (`sde.denoise`). It is the
single place of the network's preconditioning, for score models and noisy classifiers alike (`network_input`):
- "eps" (Ho et al. 2020): the network predicts the noise from x_t / sqrt(alpha_t^2 + sigma_t^2) (unit variance for
  unit-variance data) and the noise label log(sigma_t / alpha_t);
- "edm" (Karras et al. 2022, Sec. 5 and Table 1): on y = x_t / alpha_t with noise level s = sigma_t / alpha_t, the
  denoiser D(y; s) = c_skip y + c_out F(c_in y; c_noise) with c_skip = sd^2 / (s^2 + sd^2), c_out = s sd /
  sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2), c_noise = log(s) / 4 and sd = sigma_data; then
  eps = (y - D) / s = s y / (s^2 + sd^2) - sd F / sqrt(s^2 + sd^2).
- "score_sde" (score_sde_pytorch's `get_score_fn`, for its DDPM++ / NCSN++ / DDPM networks): on VP and sub-VP the
  network sees x_t as is with the label 999 t and predicts the noise; on VE it sees sigma_t and returns the score
  (NCSN++ divides by sigma inside: scale_by_sigma), so eps = -sigma_t * output. A network trained on [0, 1] data
  (`net.centered` False, score_sde's VE default) sees (x + 1) / 2 and the noise level sigma_t / 2 in its units:
  the same path in [-1, 1] model space has twice its sigmas (configs for it double sigma_min and sigma_max).
- "ddpm_index" (Ho et al. 2020, and diffusers' UNet2DModel): on a discrete chain of N steps the network sees x_t
  as is and the 0-based step index N t - 1 (so t = i/N is step i - 1; between grid times the index is fractional)
  and predicts the noise.
It is also the home of the precision policy (bf16 autocast around the network on request, fp32 everywhere else).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sde import SDE, append_dims, as_time

PRECISIONS = ("fp32", "bf16")
PARAMETERIZATIONS = ("eps", "edm", "score_sde", "ddpm_index")
SCORE_SDE_PATHS = ("vp", "subvp", "ve")  # the paths score_sde's continuous models were trained on
SCORE_SDE_VP_LABEL = 999.0  # score_sde feeds continuous VP / sub-VP models 999 t, whatever N


def network_input(sde: SDE, x: Tensor, t: Tensor, sigma_data: float | None = None) -> tuple[Tensor, Tensor]:
    """(scaled input [B, *D], noise label [B]) a network sees at x_t: the "eps" preconditioning, or EDM's c_in y and
    c_noise when sigma_data is given (see the module docstring)."""
    alpha, sigma = sde.marginal(t)
    if sigma_data is None:
        return x * append_dims(torch.rsqrt(alpha**2 + sigma**2), x.ndim), torch.log(sigma) - torch.log(alpha)
    s = sigma / alpha
    return x * append_dims(1 / (alpha * torch.sqrt(s**2 + sigma_data**2)), x.ndim), torch.log(s) / 4


def check_score_sde_net(net: nn.Module, sde: SDE) -> None:
    """Refuse (ValueError) a path or data range the score_sde conventions do not cover."""
    if sde.name not in SCORE_SDE_PATHS:
        raise ValueError(
            f"parameterization 'score_sde' needs one of the paths {list(SCORE_SDE_PATHS)}, not {sde.name!r}"
        )
    if sde.name != "ve" and not getattr(net, "centered", True):
        raise ValueError(
            "a score_sde VP / sub-VP network trained on [0, 1] data (centered=False) is not a Gaussian path of "
            "[-1, 1] model space; supported: centered=True for VP / sub-VP, either for VE"
        )


class ScoreModel(nn.Module):
    """Score s(x, t) = -eps(x, t) / sigma_t and denoiser of a network `net(x_in, noise_label, y=None)`."""

    def __init__(
        self, net: nn.Module, sde: SDE, precision: str = "fp32", parameterization: str = "eps", sigma_data: float = 0.5
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; valid: {list(PARAMETERIZATIONS)}")
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive finite number, got {sigma_data!r}")
        if parameterization == "score_sde":
            check_score_sde_net(net, sde)
        if parameterization == "ddpm_index" and not hasattr(sde, "alphas_cumprod"):
            raise ValueError(
                f"parameterization 'ddpm_index' needs a discrete chain ('ddpm', 'cosine'), not {sde.name!r}"
            )
        self.net, self.sde, self.precision = net, sde, precision
        self.parameterization, self.sigma_data = parameterization, float(sigma_data)

    @property
    def num_classes(self) -> int:
        """Number of classes the network is conditioned on (0: unconditional)."""
        return int(getattr(self.net, "num_classes", 0))

    def _net(self, x_in: Tensor, noise_label: Tensor, y: Tensor | None, dtype: torch.dtype) -> Tensor:
        with torch.autocast(x_in.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.net(x_in, noise_label, y) if y is not None else self.net(x_in, noise_label)
        return out.to(dtype)

    def eps(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The noise prediction eps_theta(x_t, t) [B, *D] (used by the losses)."""
        t = as_time(t, x)
        if self.parameterization == "eps":
            return self._net(*network_input(self.sde, x, t), y, x.dtype)
        if self.parameterization == "score_sde":
            return self._score_sde_eps(x, t, y)
        if self.parameterization == "ddpm_index":
            return self._net(x, self.sde.N * t - 1, y, x.dtype)
        # EDM: eps = (y - D(y; s)) / s on y = x / alpha, s = sigma / alpha.
        alpha, sigma = self.sde.marginal(t)
        s, sd = sigma / alpha, self.sigma_data
        out = self._net(*network_input(self.sde, x, t, sd), y, x.dtype)
        y_t = x / append_dims(alpha, x.ndim)
        return append_dims(s / (s**2 + sd**2), x.ndim) * y_t - append_dims(sd * torch.rsqrt(s**2 + sd**2), x.ndim) * out

    def _score_sde_eps(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """eps from a score_sde network (see the module docstring for its time input and output)."""
        if self.sde.name != "ve":
            return self._net(x, SCORE_SDE_VP_LABEL * t, y, x.dtype)
        centered = getattr(self.net, "centered", True)
        sigma_net = self.sde.marginal(t)[1] / (1.0 if centered else 2.0)  # sigma in the network's data units
        out = self._net(x if centered else (x + 1) / 2, sigma_net, y, x.dtype)
        return -append_dims(sigma_net, x.ndim) * out

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The score s_theta(x, t) = -eps_theta(x, t) / sigma_t [B, *D]."""
        t = as_time(t, x)
        _, sigma = self.sde.marginal(t)
        return -self.eps(x, t, y) / append_dims(sigma, x.ndim)

    def denoise(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """Tweedie's x0_hat = (x + sigma_t^2 s) / alpha_t [B, *D] (`sde.denoise`)."""
        t = as_time(t, x)
        return self.sde.denoise(x, t, self(x, t, y))

    def score_fn(self, y: Tensor | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """The score as the samplers' `score_fn(x, t)`, with the labels y (if any) fixed."""
        return lambda x, t: self(x, t, y)
