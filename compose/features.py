"""The MNIST evaluation network's view of digits: one pixel pipeline for real images and samples, features and
predictions, and the real test set whose features are the FID/KID reference.

Real digits and model samples take the same road: model space -> uint8 pixels (`data.datasets.to_uint8`) ->
mid-bin model space (pixel + 1/2) / 256 * 2 - 1. So samples are quantised exactly like stored digits, and the
evaluation network never sees a property (continuous values, values outside [-1, 1]) that only samples have.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from data.datasets import dequantize_and_scale, to_uint8
from data.mnist import load_mnist

logger = logging.getLogger(__name__)


def evalnet_input(x: Tensor) -> Tensor:
    """Model-space images [B, 1, 28, 28] -> what the evaluation net was trained on (quantised, mid-bin)."""
    return dequantize_and_scale(to_uint8(x), dequantize=False)


def pixels_to_evalnet_input(images_uint8) -> Tensor:
    """uint8 digits [N, 28, 28] or [N, 1, 28, 28] -> evaluation-net input [N, 1, 28, 28]."""
    images = torch.as_tensor(images_uint8)
    images = images[:, None] if images.ndim == 3 else images
    return dequantize_and_scale(images, dequantize=False)


@torch.no_grad()
def evalnet_outputs(net: nn.Module, x: Tensor, batch_size: int = 500, quantize: bool = True):
    """(features [N, F] float64, divided by the net's stored `feature_scale`, and predicted classes [N]) as numpy
    arrays; x in model space (quantised here unless quantize=False)."""
    device = next(net.parameters()).device
    feats, preds = [], []
    for chunk in torch.split(x, batch_size):
        chunk = (evalnet_input(chunk) if quantize else chunk).to(device)
        f = net.features(chunk)
        feats.append(f.double().cpu())
        preds.append(net.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy() / getattr(net, "feature_scale", 1.0), torch.cat(preds).numpy()


def mnist_test_root(cfg) -> str:
    """Folder of the real MNIST test IDX files: eval.data_root, else data.root."""
    return cfg.eval.data_root or cfg.data.root


def load_test_digits(cfg, limit: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """The real MNIST test digits (uint8 [N, 28, 28], labels [N], description), the first `limit` if > 0."""
    images, labels, desc = load_mnist("idx", mnist_test_root(cfg), "test", progress=False)
    if limit and limit < len(images):
        images, labels = images[:limit], labels[:limit]
        desc += f"; first {limit:,} used"
    return images, labels, desc


def real_reference(cfg, net: nn.Module) -> dict:
    """Features, predictions and labels of the real test digits (cfg.eval.num_real of them), and the net's
    accuracy on them."""
    images, labels, desc = load_test_digits(cfg, cfg.eval.num_real)
    feats, preds = evalnet_outputs(net, pixels_to_evalnet_input(images), quantize=False)
    return {
        "feats": feats,
        "preds": preds,
        "labels": labels,
        "description": desc,
        "accuracy": float((preds == labels).mean()),
    }
