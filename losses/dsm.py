"""Denoising score-matching losses: continuous DSM for any SDE, and the discrete DDPM and SMLD/NCSN objectives.

With x_t = alpha_t x_0 + sigma_t noise, the DSM objective (Song et al. 2021, Eq. 7) with weight lambda(t) is
    lambda(t) || s_theta(x_t, t) + noise / sigma_t ||^2 = lambda(t) / sigma_t^2 || eps_theta(x_t, t) - noise ||^2.
lambda = sigma_t^2 gives the plain noise-prediction MSE; lambda = g(t)^2 is the likelihood weighting that bounds
the KL divergence (Song et al. 2021b). DDPM's L_simple (Ho et al. 2020, Eq. 14) is the same MSE at t = i/N with
i uniform on 1..N of the DDPM chain, and NCSN's objective (Song & Ermon 2019, Eq. 6 with lambda = sigma^2) is the
same MSE on the noise ladder. EDM (Karras et al. 2022, Sec. 5) draws the noise level s = sigma_t / alpha_t
log-normally, ln s ~ N(P_mean, P_std^2), and weights |D - x_0|^2 by (s^2 + sd^2) / (s sd)^2, which is
(s^2 + sd^2) / sd^2 times the eps-MSE (D = y - s eps on y = x_t / alpha_t). Conditional flow matching (Lipman
et al. 2023) regresses the velocity u = d x_t / dt = alpha' x_0 + sigma' noise; its error is (sigma' - sigma alpha' /
alpha)(eps_hat - noise) = g^2 / (2 sigma) (eps_hat - noise), so its loss is the eps-MSE weighted by g^4 / (4 sigma^2)
(1 / (1 - t)^2 on the linear interpolant). So there is one loss and four ways of drawing t. Losses are per example, [B],
averaged over dimensions; the trainer reduces them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE, append_dims

WEIGHTINGS = ("sigma2", "likelihood", "edm", "flow_matching")
TIME_SAMPLINGS = ("continuous", "ddpm", "smld", "lognormal")


def dsm_loss(
    model, sde: SDE, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None, weighting: str = "sigma2"
) -> Tensor:
    """Denoising score matching at given times and noise (Song et al. 2021, Eq. 7), per example [B]."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; valid: {list(WEIGHTINGS)}")
    x_t = sde.perturb(x0, t, noise)
    eps = model.eps(x_t, t, y)
    mse = (eps - noise).flatten(1).pow(2).mean(1)  # [B]
    if weighting == "likelihood":
        _, g = sde.sde(x_t, t)
        _, sigma = sde.marginal(t)
        mse = mse * g**2 / sigma**2
    elif weighting == "edm":
        alpha, sigma = sde.marginal(t)
        sd2 = model.sigma_data**2
        mse = mse * ((sigma / alpha) ** 2 + sd2) / sd2
    elif weighting == "flow_matching":
        _, g = sde.sde(x_t, t)
        _, sigma = sde.marginal(t)
        mse = mse * (g**2 / (2 * sigma)) ** 2
    return mse


def sample_time(
    sde: SDE,
    batch_size: int,
    how: str = "continuous",
    t_min: float = 1e-5,
    num_scales: int = 1000,
    generator: torch.Generator | None = None,
    device=None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """Training times [B]: uniform on [t_min, T] ('continuous'), DDPM's grid i/N with i uniform on 1..N ('ddpm'),
    the NCSN ladder's times (L-1-i)/(L-1), label i uniform on 0..L-1 ('smld'; label 0 is the largest level), or
    EDM's log-normal noise levels ln(sigma_t / alpha_t) ~ N(p_mean, p_std^2) mapped to t and clamped to [t_min, T]
    ('lognormal')."""
    if how == "lognormal":
        # float32 draws, as EDM's code makes them (torch's float64 normals are another stream for 16+ values)
        log_s = p_mean + p_std * torch.randn(batch_size, generator=generator, device=device).double()
        return sde.t_from_logsnr(-log_s).clamp(t_min, sde.T).float()
    if how == "continuous":
        u = torch.rand(batch_size, generator=generator, device=device)
        return t_min + (sde.T - t_min) * u
    if how == "ddpm":
        i = torch.randint(1, num_scales + 1, (batch_size,), generator=generator, device=device)
        return sde.T * i / num_scales
    if how == "smld":  # label i is the i-th largest level, as NCSN's and score_sde's code index their ladder
        i = torch.randint(0, num_scales, (batch_size,), generator=generator, device=device)
        return sde.T * (num_scales - 1 - i) / (num_scales - 1)
    raise ValueError(f"unknown time sampling {how!r}; valid: {list(TIME_SAMPLINGS)}")


def loss_fn(
    model,
    sde: SDE,
    x0: Tensor,
    y: Tensor | None = None,
    how: str = "continuous",
    weighting: str = "sigma2",
    t_min: float = 1e-5,
    num_scales: int = 1000,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """Draw t and noise, then the DSM loss per example [B] (the objective named by `how`)."""
    t = sample_time(sde, x0.shape[0], how, t_min, num_scales, generator, x0.device, p_mean, p_std).to(x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return dsm_loss(model, sde, x0, t, noise, y, weighting)


def ideal_dsm_value(sde: SDE, t: Tensor, data_var: Tensor) -> Tensor:
    """Irreducible eps-MSE of DSM for Gaussian data with per-dimension variances data_var [D]: at time t [B] the
    best predictor E[noise | x_t] leaves Var(noise | x_t) = alpha^2 v / (alpha^2 v + sigma^2) per dimension."""
    alpha, sigma = sde.marginal(t)
    a2v = append_dims(alpha**2, 2) * data_var
    return (a2v / (a2v + append_dims(sigma**2, 2))).mean(1)
