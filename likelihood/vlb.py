"""The discrete variational bound of a diffusion model on a time grid (Ho et al. 2020, Eq. 5; Nichol & Dhariwal 2021).

Latents x_{t_1}, ..., x_{t_K} on a grid 0 < t_1 < ... < t_K <= T of any linear SDE in `sde` (VP, sub-VP, VE, or
DDPM's chain on t = i/N), all drawn from q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I). The negative ELBO is

    L = L_T + sum_{k=2..K} L_{k-1} + L_0,
    L_T     = KL(q(x_{t_K} | x_0) || N(0, prior_std^2 I)),
    L_{k-1} = E_q KL(q(x_s | x_t, x_0) || p(x_s | x_t)),   s = t_{k-1}, t = t_k,
    L_0     = E_q[-log p(x_0 | x_{t_1})].

Posterior of any path (`sde.posterior`). With the exact kernel x_t = a x_s + v noise, (a, v) = sde.transition(s, t),
and sigma_t^2 = a^2 sigma_s^2 + v^2, the posterior q(x_s | x_t, x_0) is N(c_t x_t + c_0 x_0, var_q I) with
c_t = a sigma_s^2 / sigma_t^2, c_0 = alpha_s v^2 / sigma_t^2 and var_q = sigma_s^2 v^2 / sigma_t^2. On DDPM's
grid a^2 = 1 - beta_t, v^2 = beta_t and var_q is beta-tilde_t (Ho et al. 2020, Eq. 7). Nothing here needs
alpha_0 = 1 or sigma_0 = 0, so the bound holds for VE (sigma_0 = sigma_min) and sub-VP too; it only needs closed-form
marginals and a strictly decreasing signal-to-noise ratio on the grid (else some v^2 = 0).

Model. p(x_s | x_t) = N(c_t x_t + c_0 x0_hat, var_p I) with Tweedie's x0_hat = (x_t + sigma_t^2 score(x_t, t))
/ alpha_t, i.e. the posterior with x_0 replaced by its estimate (Ho et al.'s mu_theta from eps = -sigma_t score).
var_p: "posterior" (var_q, beta-tilde; then the KL is c_0^2 |x_0 - x0_hat|^2 / (2 var_q)) or "forward" (v^2, beta_t).
Decoder p(x_0 | x_{t_1}) has mean x0_hat and standard deviation sigma_{t_1} / alpha_{t_1} (the spread of x_0 given
x_{t_1} under the reversed kernel; Ho et al. use sqrt(beta_1) = sigma_{t_1}, which differs by a factor
sqrt(1 - beta_1)), either "discretized" over the 256 pixel bins of data.datasets' map y = 2 (k + u)/256 - 1 (bin
width 2/256 with the outer edges at -+inf; Ho et al. map pixels to k/127.5 - 1, hence their width 2/255) for
8-bit data, or "gaussian" for continuous data, or "ddpm": Ho et al.'s code (diffusion_utils_2; improved-diffusion
ports it unchanged), for 8-bit data mapped k / 127.5 - 1: bins of half-width 1/255 with the outer ones open, the
standard normal CDF by its tanh approximation, and the std of the posterior q(x_{t_1} | x_{t_2}, x_0) (their
`posterior_variance[1]`, for both of their fixed variances). Each term is estimated with one draw of
x_t ~ q(x_t | x_0) per example, independent across terms, so `vlb_terms` is an unbiased estimate of L, in nats.

Grid. `bound_grid` spaces K times evenly in t (DDPM; on DDPM's chain a strided subset of its N steps that keeps the
first one, t_1 = 1/N) or in log-SNR. With the exact score the bound falls as the grid is refined between fixed end
points, like 1/K on a log-SNR grid (each step's Riemann-sum error is O(dlogSNR^2)), down to the decoder and prior
mismatch; a uniform-in-t grid with t_1 fixed is far from that at small K, because its first step spans a huge
SNR ratio (tests/test_vlb.py has the numbers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time, batch_sum, require
from sde.base import STEP_VARIANCES
from sde.discrete import respaced_steps

from .bpd import check_data

VARIANCES = STEP_VARIANCES  # p(x_s | x_t)'s variance: the posterior's beta-tilde or the forward kernel's v^2
DECODERS = ("discretized", "gaussian", "ddpm")
IMAGE_DECODERS = ("discretized", "ddpm")  # the decoders for 8-bit images (`--mode eval`'s eval.bound_decoder)
GRIDS = ("uniform", "logsnr")
PIXEL_LEVELS = 256


def _logsnr_times(sde: SDE, t_first: float, num_steps: int) -> Tensor:
    """Times [K] from t_first to T evenly spaced in lambda_t (`sde.t_from_logsnr`, float64), ends exact."""
    ends = torch.tensor([t_first, sde.T], dtype=torch.float64)
    target = torch.linspace(*sde.logsnr(ends).tolist(), num_steps, dtype=torch.float64)  # [K]
    return torch.cat([ends[:1], sde.t_from_logsnr(target)[1:-1].clamp(t_first, sde.T), ends[1:]])


def bound_grid(sde: SDE, num_steps: int, t_min: float | None = None, spacing: str = "uniform") -> Tensor:
    """Increasing grid t_1 = t_min < ... < t_K = T [K] of the bound (float64), evenly spaced in t or in lambda_t.

    t_min defaults to T / num_steps, so "uniform" gives k T / K. On DDPM's chain (an SDE with N steps) t_min
    defaults to 1/N, and "uniform" from there is improved DDPM's respacing exactly (`sde.discrete.respaced_steps`:
    K of the chain's steps, the first and the last kept); other grids on a chain are snapped to its times i/N,
    which may merge times, giving fewer than K.
    """
    if spacing not in GRIDS:
        raise ValueError(f"unknown grid spacing {spacing!r}; valid: {list(GRIDS)}")
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    n = getattr(sde, "N", None)
    if n is not None and num_steps > n:
        raise ValueError(f"num_steps={num_steps} exceeds the {n} steps of the discrete chain")
    num_steps = int(num_steps)
    t_first = t_min if t_min is not None else sde.T / (n or num_steps)
    if not 0 <= t_first <= sde.T or (num_steps > 1 and t_first == sde.T):
        raise ValueError(f"t_min must lie in [0, T) = [0, {sde.T}), got {t_min!r}")
    if num_steps == 1:
        return torch.tensor([sde.T], dtype=torch.float64)
    if spacing == "uniform" and n is not None and t_first == sde.T / n:
        return torch.tensor(respaced_steps(n, num_steps), dtype=torch.float64) * sde.T / n
    if spacing == "uniform":
        grid = torch.linspace(t_first, sde.T, num_steps, dtype=torch.float64)
    else:
        grid = _logsnr_times(sde, t_first, num_steps)
    if n is not None:  # snap to the chain's times i/N, i = 1..N
        grid = torch.unique(torch.round(grid * n / sde.T).clamp(1, n)) * sde.T / n
    return grid


def check_bound_support(sde: SDE, grid: Tensor) -> None:
    """Raise ValueError unless the SDE has closed-form marginals and the grid is usable for the bound."""
    require(sde, "posterior", "prior_std", who="the discrete variational bound")
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() < 1 or grid[0] < 0 or grid[-1] > sde.T or (grid.diff() <= 0).any():
        raise ValueError(f"the bound needs an increasing grid 0 <= t_1 < ... < t_K <= T = {sde.T}, got {grid}")
    alpha, sigma = sde.marginal(grid)
    if not ((alpha > 0).all() and (sigma > 0).all() and (sde.snr(grid).diff() < 0).all()):
        raise ValueError(
            f"the discrete variational bound needs alpha_t > 0, sigma_t > 0 and a strictly decreasing "
            f"signal-to-noise ratio on the grid; {sde!r} gives sigma(t_1) = {sigma[0].item():.3g}"
        )


def gaussian_kl(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)) in nats [B]; means [B, *D], variances [B]."""
    d = mean_q[0].numel()
    ratio = var_q / var_p
    return 0.5 * (d * (ratio - 1 - torch.log(ratio)) + batch_sum((mean_q - mean_p) ** 2) / var_p)


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log P(pixel bin of x0) under N(mean, std^2) with CDF differences over bins of width 2/256 in [-1, 1] and
    the outer edges at -+inf (Ho et al. 2020, Sec. 3.3), summed over dimensions [B]; computed in float64."""
    x0, mean, std = x0.double(), mean.double(), append_dims(std.double(), x0.ndim)
    k = torch.round((x0 + 1) * PIXEL_LEVELS / 2 - 0.5)
    if x0.min() < -1 or x0.max() > 1 or ((2 * k + 1) / PIXEL_LEVELS - 1 - x0).abs().max() > 1e-4:
        raise ValueError(
            "the discretised decoder needs 8-bit data at pixel-bin centres (2k + 1)/256 - 1 in [-1, 1] "
            "(data.datasets.dequantize_and_scale(images, dequantize=False)); got values in "
            f"[{x0.min().item():.4g}, {x0.max().item():.4g}] off the centres"
        )
    lower = torch.where(k > 0, 2 * k / PIXEL_LEVELS - 1, -math.inf)
    upper = torch.where(k < PIXEL_LEVELS - 1, 2 * (k + 1) / PIXEL_LEVELS - 1, math.inf)
    a, b = (lower - mean) / std, (upper - mean) / std
    # log(Phi(b) - Phi(a)), evaluated in the tail where the CDFs are small (by symmetry if the bin is right of mean).
    flip = a > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return batch_sum(log_b + torch.log(-torch.expm1(log_a - log_b)))


def ddpm_discretized_log_likelihood(x0: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Ho et al.'s discretised decoder as their code computes it (diffusion_utils_2.discretized_gaussian_log_likelihood,
    improved-diffusion's losses.py): for 8-bit data k / 127.5 - 1, log of the CDF difference over [x - 1/255,
    x + 1/255], the lowest bin open below and the highest above (x < -0.999, x > 0.999), the CDF approximated by
    0.5 (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3))), probabilities clamped at 1e-12; summed over dimensions [B]."""
    k = torch.round((x0.double() + 1) * 127.5)
    if x0.min() < -1 or x0.max() > 1 or (k / 127.5 - 1 - x0.double()).abs().max() > 1e-4:
        raise ValueError(
            "the 'ddpm' decoder needs 8-bit data mapped as Ho et al.'s code does, k / 127.5 - 1 in [-1, 1]; got "
            f"values in [{x0.min().item():.4g}, {x0.max().item():.4g}] off that map"
        )

    def cdf(z: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))

    centered, inv_std = x0 - mean, 1 / append_dims(std, x0.ndim)
    cdf_plus, cdf_min = cdf(inv_std * (centered + 1 / 255)), cdf(inv_std * (centered - 1 / 255))
    log_probs = torch.where(
        x0 < -0.999,
        torch.log(cdf_plus.clamp(min=1e-12)),
        torch.where(
            x0 > 0.999, torch.log((1 - cdf_min).clamp(min=1e-12)), torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
        ),
    )
    return batch_sum(log_probs)


def _decoder_nll(x0: Tensor, x0_hat: Tensor, std: Tensor, decoder: str) -> Tensor:
    """L_0 = -log p(x_0 | x_{t_1}) [B] for the discretised (ours or Ho et al.'s code's) or the continuous decoder."""
    if decoder == "discretized":
        return -discretized_gaussian_log_likelihood(x0, x0_hat, std)
    if decoder == "ddpm":
        return -ddpm_discretized_log_likelihood(x0, x0_hat, std)
    d = x0[0].numel()
    return 0.5 * batch_sum((x0 - x0_hat) ** 2) / std**2 + d * (torch.log(std) + 0.5 * math.log(2 * math.pi))


def _x0_hat(score_fn: ScoreFn, sde: SDE, x_t: Tensor, t: Tensor, clip_x0: bool) -> Tensor:
    """Tweedie's denoiser `sde.denoise`, optionally clipped to [-1, 1]."""
    x0_hat = sde.denoise(x_t, t, score_fn(x_t, t))
    return x0_hat.clamp(-1, 1) if clip_x0 else x0_hat


def _diffusion_term(score_fn, sde, x0, s, t, variance, clip_x0, generator) -> Tensor:
    """L_{k-1} = KL(q(x_s | x_t, x_0) || p(x_s | x_t)) [B] at one draw x_t ~ q(x_t | x_0)."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = sde.perturb(x0, t, noise)
    c_t, c_0, var_q = sde.posterior(s, t)
    var_p = sde.step_variance(s, t, variance)
    c_t, c_0 = append_dims(c_t, x0.ndim), append_dims(c_0, x0.ndim)
    mean_q = c_t * x_t + c_0 * x0
    mean_p = c_t * x_t + c_0 * _x0_hat(score_fn, sde, x_t, t, clip_x0)
    return gaussian_kl(mean_q, var_q, mean_p, var_p)


@torch.no_grad()
def vlb_terms(
    score_fn: ScoreFn,
    sde: SDE,
    x0: Tensor,
    grid: Tensor,
    variance: str = "posterior",
    decoder: str = "discretized",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Per-term negative ELBO in nats (Ho et al. 2020, Eq. 5): {"prior" [B], "diffusion" [B, K-1], "decoder" [B],
    "total" [B]}; "diffusion" holds L_{k-1} for k = 2..K in grid order."""
    if variance not in VARIANCES:
        raise ValueError(f"unknown bound variance {variance!r}; valid: {list(VARIANCES)}")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; valid: {list(DECODERS)}")
    check_bound_support(sde, grid)
    check_data(x0)
    if decoder == "ddpm" and len(grid) < 2:
        raise ValueError("the 'ddpm' decoder's std is the posterior's between the grid's first two times: K >= 2")
    times = [as_time(float(t), x0) for t in grid]
    # Prior term L_T.
    mean_t, sigma_t = sde.marginal_prob(x0, times[-1])
    prior_var = torch.full_like(sigma_t, sde.prior_std**2)
    prior = gaussian_kl(mean_t, sigma_t**2, torch.zeros_like(x0), prior_var)
    # Diffusion terms L_{k-1}, k = 2..K.
    diffusion = [
        _diffusion_term(score_fn, sde, x0, s, t, variance, clip_x0, generator) for s, t in zip(times[:-1], times[1:])
    ]
    diffusion = torch.stack(diffusion, 1) if diffusion else x0.new_zeros(x0.shape[0], 0)
    # Decoder term L_0.
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_1 = sde.perturb(x0, times[0], noise)
    alpha_1, sigma_1 = sde.marginal(times[0])
    std = sde.posterior(times[0], times[1])[2].sqrt() if decoder == "ddpm" else sigma_1 / alpha_1
    decoder_nll = _decoder_nll(x0, _x0_hat(score_fn, sde, x_1, times[0], clip_x0), std, decoder)
    decoder_nll = decoder_nll.to(x0.dtype)
    return {
        "prior": prior,
        "diffusion": diffusion,
        "decoder": decoder_nll,
        "total": prior + diffusion.sum(1) + decoder_nll,
    }


def vlb_bits_per_dim(terms: dict[str, Tensor], num_dims: int) -> dict[str, Tensor]:
    """The bound's terms in bits/dim [B] each ("diffusion" summed over steps): nats / (D ln 2) (discrete data)."""
    scale = 1 / (num_dims * math.log(2))
    return {
        "total": terms["total"] * scale,
        "prior": terms["prior"] * scale,
        "diffusion": terms["diffusion"].sum(1) * scale,
        "decoder": terms["decoder"] * scale,
    }
