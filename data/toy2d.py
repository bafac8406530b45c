"""2-D demo distributions for score-based diffusion: checkerboard, two moons, concentric rings, 8 Gaussians.

Every sampler has the signature ``sample_xxx(n, generator=None, **options) -> Tensor[n, 2]`` (float32, CPU),
draws all randomness from the given ``torch.Generator``, and is centred and scaled with closed-form constants so
that the data has mean ~0 and average per-coordinate variance ~1 (shapes are not distorted: one common scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Sampler = Callable[..., torch.Tensor]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of samples must be a positive int, got {n!r}")


def _check_nonneg(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform samples from the 8 dark squares of a 4x4 checkerboard, scaled to unit variance."""
    _check_n(n)
    x = torch.rand(n, generator=generator) * 4 - 2
    row = torch.randint(0, 2, (n,), generator=generator) * 2 - 2  # -2 or 0
    y = torch.rand(n, generator=generator) + row + torch.floor(x).remainder(2)
    # Both marginals are U[-2, 2], variance 4/3.
    return (torch.stack([x, y], dim=1) / math.sqrt(4.0 / 3.0)).float()


def sample_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """Two interleaving half circles (sklearn-style) with Gaussian ``noise``, centred and scaled to unit variance."""
    _check_n(n)
    _check_nonneg("noise", noise)
    t = torch.rand(n, generator=generator) * math.pi
    inner = torch.rand(n, generator=generator) < 0.5
    x = torch.where(inner, 1 - torch.cos(t), torch.cos(t))
    y = torch.where(inner, 0.5 - torch.sin(t), torch.sin(t))
    pts = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=generator)
    # Closed form: mean (0.5, 0.25); var_x = 3/4, var_y = 9/16 - 1/pi (+ noise^2 each).
    var = (0.75 + 0.5625 - 1 / math.pi) / 2 + noise**2
    return ((pts - torch.tensor([0.5, 0.25])) / math.sqrt(var)).float()


def sample_rings(
    n: int,
    generator: torch.Generator | None = None,
    radii: tuple[float, ...] = (1.0, 2.0, 3.0),
    noise: float = 0.08,
) -> torch.Tensor:
    """Concentric circles with the given ``radii`` (equal mass each) plus isotropic Gaussian ``noise``."""
    _check_n(n)
    _check_nonneg("noise", noise)
    if len(radii) == 0 or any(not r > 0 for r in radii):
        raise ValueError(f"radii must be a non-empty sequence of positive numbers, got {radii!r}")
    r = torch.tensor(radii, dtype=torch.float32)
    ring = torch.randint(0, len(radii), (n,), generator=generator)
    theta = torch.rand(n, generator=generator) * (2 * math.pi)
    pts = r[ring, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    pts = pts + noise * torch.randn(n, 2, generator=generator)
    var = sum(float(x) ** 2 for x in radii) / len(radii) / 2 + noise**2
    return (pts / math.sqrt(var)).float()


def sample_eight_gaussians(
    n: int, generator: torch.Generator | None = None, radius: float = 2.0, std: float = 0.1
) -> torch.Tensor:
    """Mixture of 8 equal Gaussians (``std``) evenly spaced on a circle of ``radius``, scaled to unit variance."""
    _check_n(n)
    _check_nonneg("std", std)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    k = torch.randint(0, 8, (n,), generator=generator).float()
    angle = k * (2 * math.pi / 8)
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    pts = centres + std * torch.randn(n, 2, generator=generator)
    var = radius**2 / 2 + std**2
    return (pts / math.sqrt(var)).float()


TOY2D: dict[str, Sampler] = {
    "checkerboard": sample_checkerboard,
    "moons": sample_moons,
    "rings": sample_rings,
    "8gaussians": sample_eight_gaussians,
}
