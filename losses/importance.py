"""Importance sampling of the training time for likelihood weighting (Song et al. 2021b, "Maximum likelihood
training of score-based diffusion models", Sec. 5).

The likelihood-weighted DSM objective with t ~ U[t_min, T] is E_t[lambda(t) || eps_theta - noise ||^2] with
lambda(t) = g(t)^2 / sigma_t^2 (losses/dsm.py, weighting="likelihood"), whose weight spans five orders of
magnitude for VP (~1/t near 0), so its Monte-Carlo estimate is noisy. Drawing t from p(t) ∝ lambda(t) instead and
multiplying the plain eps-MSE by

    weight(t) = lambda(t) / ((T - t_min) p(t))

gives the same expectation, E_{t~p}[weight ||eps - noise||^2] = E_{t~U}[lambda ||eps - noise||^2], with an almost
constant weight (Z / (T - t_min), Z = int lambda). The inverse CDF is tabulated for any SDE: lambda is integrated
by the trapezoid rule over 4096 cells (log-spaced near t_min, where lambda ~ 1/t, and linear up to T), p is taken
piecewise constant on the cells, and the weight uses the exact lambda(t) and that same p, so the estimate is
exactly unbiased whatever the table's resolution.

Use: t, weight = sample_importance_time(sde, B, t_min, generator);
     loss = weight * dsm_loss(model, sde, x0, t, noise, weighting="sigma2").
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import SDE

TABLE_CELLS = 4096


def likelihood_weight(sde: SDE, t: Tensor) -> Tensor:
    """lambda(t) = g(t)^2 / sigma_t^2, the likelihood weighting of the eps-MSE (Song et al. 2021b, Thm. 1)."""
    _, g = sde.sde(torch.zeros(t.shape[0], 1, dtype=t.dtype, device=t.device), t)
    return g**2 / sde.marginal(t)[1] ** 2


def _table(sde: SDE, t_min: float) -> tuple[Tensor, Tensor]:
    """Cell edges [M + 1] and cumulative normalised mass [M + 1] of lambda on [t_min, T] (float64)."""
    half = TABLE_CELLS // 2
    log_part = torch.logspace(torch.log10(torch.tensor(t_min)).item(), 0.0, half + 1, dtype=torch.float64) * sde.T
    lin_part = torch.linspace(t_min, sde.T, half + 1, dtype=torch.float64)
    edges = torch.unique(torch.cat([log_part, lin_part]).clamp(t_min, sde.T))
    lam = likelihood_weight(sde, edges)
    mass = 0.5 * (lam[1:] + lam[:-1]) * edges.diff()  # trapezoid rule per cell
    cdf = torch.cat([mass.new_zeros(1), torch.cumsum(mass, 0)])
    return edges, cdf / cdf[-1]


def sample_importance_time(
    sde: SDE, batch: int, t_min: float = 1e-5, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Times t [B] with density ∝ g(t)^2 / sigma_t^2 on [t_min, T] and the weights [B] that keep the likelihood-weighted
    objective unbiased (Song et al. 2021b, Sec. 5); float32 on the CPU (the caller moves them)."""
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if not 0 < t_min < sde.T:
        raise ValueError(f"t_min must lie in (0, T) = (0, {sde.T}), got {t_min!r}")
    edges, cdf = _table(sde, t_min)
    # Inverse CDF: the cell by its cumulative mass, then uniform inside the cell (piecewise-constant density).
    u = torch.rand(int(batch), generator=generator, dtype=torch.float64)
    cell = torch.searchsorted(cdf, u, right=True).clamp(1, len(edges) - 1) - 1
    frac = (u - cdf[cell]) / (cdf[cell + 1] - cdf[cell])
    width = edges[cell + 1] - edges[cell]
    t = (edges[cell] + frac.clamp(0, 1) * width).clamp(t_min, sde.T)
    density = (cdf[cell + 1] - cdf[cell]) / width  # p(t) on the cell
    weight = likelihood_weight(sde, t) / ((sde.T - t_min) * density)
    return t.float(), weight.float()
