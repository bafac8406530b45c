"""Image grids of model-space samples: x in [-1, 1] -> uint8 pixels via data.datasets.to_uint8 -> one PNG."""

from __future__ import annotations

import math
import os

import torch
from PIL import Image

from data.datasets import to_uint8


def make_grid(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile images [B, C, H, W] in model space into one uint8 grid [C, H', W'] with `nrow` images per row."""
    if x.ndim != 4:
        raise ValueError(f"make_grid expects images [B, C, H, W], got shape {tuple(x.shape)}")
    pixels = to_uint8(x.cpu())  # [B, C, H, W] uint8
    b, c, h, w = pixels.shape
    ncol = max(min(nrow, b), 1)
    nrows = math.ceil(b / ncol)
    grid = torch.zeros(c, nrows * (h + padding) + padding, ncol * (w + padding) + padding, dtype=torch.uint8)
    for i in range(b):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[:, top : top + h, left : left + w] = pixels[i]
    return grid


def save_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> torch.Tensor:
    """Save model-space images [B, C, H, W] as one PNG grid; return the grid [C, H', W'] (uint8)."""
    grid = make_grid(x, nrow)
    array = grid.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return grid
