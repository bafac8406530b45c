"""Classifiers: noise-conditional ones for classifier guidance, and a plain MNIST CNN for evaluation metrics.

* :class:`NoisyClassifier` / :class:`NoisyMLPClassifier` model p(c | x_t, t) on noisy inputs, conditioned on
  ``noise_label = log(sigma_t / alpha_t)`` like the eps-networks; the gradient of their log-probability w.r.t.
  ``x_t`` steers sampling (classifier guidance: Song et al., "Score-Based Generative Modeling through Stochastic
  Differential Equations", 2021, Sec. 5 / App. I; Dhariwal & Nichol, "Diffusion Models Beat GANs on Image
  Synthesis", 2021, whose classifier is the downsampling half of the U-Net with pooling, as here).
* :class:`MNISTFeatureNet` is an ordinary (noise-free) small CNN for 28x28 digits; its penultimate features are
  used for FID/KID on digits (Heusel et al., 2017; Binkowski et al., 2018) and its logits for the accuracy of
  class-conditional samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.embeddings import ConditionEmbedding
from models.layers import AttentionBlock, Downsample, ResBlock, check_image_input, group_norm
from models.mlp import ResidualMLPBlock, flatten_vector_input
from models.unet import check_unet_geometry

__all__ = ["NoisyClassifier", "NoisyMLPClassifier", "MNISTFeatureNet"]


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for a classifier, got {num_classes}")


class NoisyClassifier(nn.Module):
    """Noise-conditional image classifier (U-Net encoder + mean pooling): ``forward(x, noise_label) -> logits``."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        base_channels: int = 16,
        channel_mult: Sequence[int] = (1, 4, 4),
        num_res_blocks: int = 1,
        attn_resolutions: Sequence[int] = (),
        num_heads: int = 2,
        dropout: float = 0.0,
        emb_dim: int = 128,
        num_groups: int | None = None,
    ):
        super().__init__()
        _check_num_classes(num_classes)
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        resolutions = check_unet_geometry(image_size, channel_mult, attn_resolutions)
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        block_kw = dict(emb_dim=emb_dim, dropout=dropout, num_groups=num_groups)

        self.embed = ConditionEmbedding(emb_dim=emb_dim, num_classes=0)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.blocks = nn.ModuleList()
        ch = base_channels
        for level, (mult, res) in enumerate(zip(channel_mult, resolutions)):
            for _ in range(num_res_blocks):
                out_ch = base_channels * int(mult)
                self.blocks.append(ResBlock(in_channels=ch, out_channels=out_ch, **block_kw))
                ch = out_ch
                if res in attn_resolutions:
                    self.blocks.append(AttentionBlock(channels=ch, num_heads=num_heads, num_groups=num_groups))
            if level != len(channel_mult) - 1:
                self.blocks.append(Downsample(channels=ch))
        self.blocks.append(ResBlock(in_channels=ch, **block_kw))
        self.norm_out = group_norm(ch, num_groups)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor) -> torch.Tensor:
        """Return class logits [B, num_classes] for noisy images ``x`` [B, C, H, W] at ``noise_label`` [B]."""
        check_image_input(x, self.in_channels, self.image_size)
        emb = self.embed(noise_label, batch_size=x.shape[0])
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(F.silu(self.norm_out(h)).mean(dim=tuple(range(2, h.ndim))))


class NoisyMLPClassifier(nn.Module):
    """Noise-conditional residual-MLP classifier for [B, dim] data: ``forward(x, noise_label) -> logits``."""

    def __init__(
        self,
        *,
        dim: int = 2,
        num_classes: int,
        hidden: int = 256,
        depth: int = 3,
        emb_dim: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_num_classes(num_classes)
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("emb_dim", emb_dim)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.dim = dim
        self.num_classes = num_classes
        self.embed = ConditionEmbedding(emb_dim=emb_dim, num_classes=0)
        self.linear_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            [ResidualMLPBlock(hidden=hidden, emb_dim=emb_dim, dropout=dropout) for _ in range(depth)]
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor) -> torch.Tensor:
        """Return class logits [B, num_classes] for noisy ``x`` [B, dim] at ``noise_label`` [B]."""
        h = self.linear_in(flatten_vector_input(x, self.dim))
        emb = self.embed(noise_label, batch_size=x.shape[0])
        for block in self.blocks:
            h = block(h, emb)
        return self.head(F.silu(self.norm_out(h)))


class MNISTFeatureNet(nn.Module):
    """Small clean-image CNN for 28x28 digits: ``forward(x) -> logits``, ``features(x) -> [B, feature_dim]``.

    Two conv-conv-maxpool stages (32 and 64 channels, 28 -> 14 -> 7), a ``feature_dim`` fully-connected layer
    (the features, after ReLU) and a linear classifier. Feed it images scaled exactly as during its training.
    """

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128, dropout: float = 0.3):
        super().__init__()
        _check_num_classes(num_classes)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {feature_dim}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.fc = nn.Linear(64 * 7 * 7, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features [B, feature_dim] (post-ReLU, deterministic) of images ``x`` [B, C, H, W]."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < 4:
            raise ValueError(f"expected x of shape [B, {self.in_channels}, 28, 28], got {list(x.shape)}")
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] of images ``x`` [B, C, H, W]."""
        return self.head(self.dropout(self.features(x)))
