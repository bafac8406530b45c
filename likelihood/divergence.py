"""Divergence of a vector field, exactly or by Hutchinson's trace estimator (Hutchinson 1989; Grathwohl et al. 2019).

For a field F: R^D -> R^D evaluated at x, div F(x) = tr(dF/dx). The exact trace takes D vector-Jacobian products
(one per coordinate). Hutchinson's estimator takes one per probe: for a probe v with E[v v^T] = I,
E[v^T (dF/dx) v] = tr(dF/dx), and v^T (dF/dx) v = (v^T dF/dx) . v is one vector-Jacobian product. Rademacher
probes (+-1 entries) have the smallest variance, 2 sum_{i != j} ((J_ij + J_ji)/2)^2; Gaussian probes add
2 sum_i J_ii^2. Every function returns one estimate per probe, [B, K], so that the caller can both average
and report the spread over probes; the exact divergence is returned as a single "probe", [B, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde import batch_sum


def rademacher_probes(shape, num_probes: int, generator: torch.Generator | None, device, dtype) -> Tensor:
    """K Rademacher probes with entries +-1, [K, *shape] (Hutchinson 1989)."""
    bits = torch.randint(0, 2, (num_probes, *shape), generator=generator, device=device)
    return (2 * bits - 1).to(dtype)


def gaussian_probes(shape, num_probes: int, generator: torch.Generator | None, device, dtype) -> Tensor:
    """K standard-normal probes, [K, *shape] (Skilling 1989; FFJORD, Grathwohl et al. 2019)."""
    return torch.randn((num_probes, *shape), generator=generator, device=device, dtype=dtype)


PROBES = {"rademacher": rademacher_probes, "gaussian": gaussian_probes}


def draw_probes(probe: str, shape, num_probes: int, generator=None, device=None, dtype=None) -> Tensor:
    """K probes of the kind named in `PROBES`, [K, *shape] (drawn once per ODE solve and kept fixed)."""
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; valid: {sorted(PROBES)}")
    return PROBES[probe](shape, num_probes, generator, device, dtype or torch.get_default_dtype())


def hutchinson_divergence(out: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """Hutchinson estimates v_k^T (d out/dx) v_k of div out, one per probe, [B, K] (Hutchinson 1989).

    `out` [B, *D] must have been computed from `x` [B, *D] (requires_grad) with a graph; probes [K, B, *D].
    Each probe costs one vector-Jacobian product.
    """
    estimates = []
    for probe in probes:
        vjp = torch.autograd.grad(out, x, grad_outputs=probe, retain_graph=True)[0]  # v^T dF/dx, [B, *D]
        estimates.append(batch_sum(vjp * probe))
    return torch.stack(estimates, 1)


def exact_divergence(out: Tensor, x: Tensor) -> Tensor:
    """Exact div out = sum_i d out_i / d x_i by D vector-Jacobian products, [B, 1] (for small dimension D)."""
    flat_out = out.flatten(1)  # [B, D]
    div = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
    for i in range(flat_out.shape[1]):
        grad_i = torch.autograd.grad(flat_out[:, i].sum(), x, retain_graph=True)[0]  # row i of dF/dx, [B, *D]
        div = div + grad_i.flatten(1)[:, i]
    return div[:, None]


DIVERGENCES = ("hutchinson", "exact")
