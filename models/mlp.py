"""Noise-conditioned residual MLP for low-dimensional data (2-D toy distributions, small vectors).

The eps-prediction counterpart of the U-Net for data of shape [B, dim], used for the 2-D toy experiments in the
spirit of Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", 2021. Each
residual block is the fully-connected analogue of the DDPM ResBlock (Ho et al., 2020) with the adaptive
(scale-shift) conditioning of Dhariwal & Nichol, 2021. Interface: ``net(x, noise_label, y=None) -> eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.embeddings import ConditionEmbedding

__all__ = ["ResidualMLPBlock", "MLP", "flatten_vector_input"]


def flatten_vector_input(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Return ``x`` [B, *shape] flattened to [B, dim]; raise ValueError if it does not hold ``dim`` features."""
    if x.ndim < 2 or math.prod(x.shape[1:]) != dim:
        raise ValueError(f"expected x of shape [B, {dim}] (or [B, ...] with {dim} features), got {list(x.shape)}")
    return x.reshape(x.shape[0], dim)


class ResidualMLPBlock(nn.Module):
    """LN-SiLU-Linear, scale-shift by the embedding, LN-SiLU-dropout-Linear (zero-init), plus identity skip."""

    def __init__(self, *, hidden: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.norm0 = nn.LayerNorm(hidden)
        self.linear0 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(emb_dim, 2 * hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.linear1.weight)
        nn.init.zeros_(self.linear1.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``h`` [B, hidden] conditioned on ``emb`` [B, emb_dim]."""
        r = self.linear0(F.silu(self.norm0(h)))
        scale, shift = self.emb_proj(F.silu(emb)).chunk(2, dim=1)
        r = self.norm1(r) * (1 + scale) + shift
        return h + self.linear1(self.dropout(F.silu(r)))


class MLP(nn.Module):
    """Residual MLP eps-network for [B, dim] data: ``forward(x, noise_label, y=None) -> eps`` shaped like ``x``."""

    def __init__(
        self,
        *,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 3,
        num_classes: int = 0,
        emb_dim: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("emb_dim", emb_dim)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.dim = dim
        self.num_classes = num_classes
        self.embed = ConditionEmbedding(emb_dim=emb_dim, num_classes=num_classes)
        self.linear_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            [ResidualMLPBlock(hidden=hidden, emb_dim=emb_dim, dropout=dropout) for _ in range(depth)]
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.linear_out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.linear_out.weight)
        nn.init.zeros_(self.linear_out.bias)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise eps (shape of ``x``) from ``x`` [B, dim], ``noise_label`` [B] and labels ``y`` [B]."""
        h = self.linear_in(flatten_vector_input(x, self.dim))
        emb = self.embed(noise_label, y, batch_size=x.shape[0])
        for block in self.blocks:
            h = block(h, emb)
        return self.linear_out(F.silu(self.norm_out(h))).reshape(x.shape)
