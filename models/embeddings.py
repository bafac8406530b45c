"""Conditioning embeddings for eps-prediction networks: noise level and class label.

Every network in ``models`` is conditioned on ``noise_label = log(sigma_t / alpha_t)``, the log noise-to-signal
ratio of the forward SDE (Kingma et al., "Variational Diffusion Models", 2021, call its negative the log-SNR
``lambda``). The label is mapped to sinusoidal features (the Transformer positional embedding used for the
timestep in Ho et al., "Denoising Diffusion Probabilistic Models", 2020) with frequencies chosen for the range
of the label (about -10..+9), followed by a two-layer MLP, as in the mapping network of Karras et al.,
"Elucidating the Design Space of Diffusion-Based Generative Models" (EDM), 2022. An optional class label is
embedded with an ``nn.Embedding`` holding one extra row for the "null" label used by classifier-free guidance
(Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022) and added to the noise features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalEmbedding", "ConditionEmbedding", "check_noise_label", "check_class_labels"]


def check_noise_label(noise_label: torch.Tensor | float, batch_size: int, like: torch.Tensor) -> torch.Tensor:
    """Return ``noise_label`` as a float tensor of shape [batch_size], broadcasting a scalar; raise on bad shape."""
    noise_label = torch.as_tensor(noise_label, device=like.device)
    if not torch.is_floating_point(noise_label):
        noise_label = noise_label.to(like.dtype if torch.is_floating_point(like) else torch.float32)
    if noise_label.ndim == 0:
        return noise_label.expand(batch_size)
    if noise_label.ndim == 1 and noise_label.shape[0] == 1:
        return noise_label.expand(batch_size)
    if noise_label.shape != (batch_size,):
        raise ValueError(
            f"noise_label must have shape [B] = [{batch_size}] (or be a scalar), got {list(noise_label.shape)}"
        )
    return noise_label


def check_class_labels(y: torch.Tensor | None, num_classes: int, batch_size: int) -> torch.Tensor | None:
    """Validate class labels ``y`` in [0, num_classes] (num_classes = null label); raise ValueError if invalid."""
    if y is None:
        return None
    if num_classes == 0:
        raise ValueError("got class labels y, but the network was built unconditional (num_classes=0); pass y=None")
    if not isinstance(y, torch.Tensor) or torch.is_floating_point(y) or torch.is_complex(y) or y.dtype == torch.bool:
        raise ValueError(
            f"y must be an integer (Long) tensor of class labels, got {type(y).__name__} "
            f"{getattr(y, 'dtype', '')}".rstrip()
        )
    if y.shape != (batch_size,):
        raise ValueError(f"y must have shape [B] = [{batch_size}], got {list(y.shape)}")
    if y.numel() > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"class label {bad} out of range; allowed: 0..{num_classes - 1} for classes and {num_classes} "
                "for the null (unconditional) label"
            )
    return y.long()


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal features [cos(w_i * v), sin(w_i * v)] of a scalar per sample, w_i geometric in [min_freq, max_freq].

    The defaults suit a log noise-to-signal ratio in about [-10, 9]: the lowest angular frequency (0.02) is
    close to linear over that range, the highest (10) resolves changes of ~0.1 in the label.
    """

    def __init__(self, *, num_channels: int, min_freq: float = 0.02, max_freq: float = 10.0):
        super().__init__()
        if num_channels < 2 or num_channels % 2 != 0:
            raise ValueError(f"num_channels must be an even integer >= 2, got {num_channels}")
        if not 0 < min_freq <= max_freq:
            raise ValueError(f"need 0 < min_freq <= max_freq, got min_freq={min_freq}, max_freq={max_freq}")
        self.num_channels = num_channels
        half = num_channels // 2
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), half, dtype=torch.float64))
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Map ``v`` of shape [B] to features of shape [B, num_channels]."""
        args = v.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ConditionEmbedding(nn.Module):
    """Embedding of (noise_label, optional class label) -> [B, emb_dim] vector fed to every residual block.

    ``noise_label`` -> sinusoidal features -> Linear; the class-label embedding (``num_classes + 1`` rows, the
    last one the null label) is added; then SiLU -> Linear. Consumers apply their own SiLU/Linear per block.
    With ``num_classes > 0`` and ``y=None`` the null label is used (unconditional prediction).
    """

    def __init__(
        self,
        *,
        emb_dim: int,
        num_classes: int = 0,
        num_freqs: int | None = None,
        min_freq: float = 0.02,
        max_freq: float = 10.0,
    ):
        super().__init__()
        if emb_dim < 1:
            raise ValueError(f"emb_dim must be a positive integer, got {emb_dim}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        num_freqs = num_freqs if num_freqs is not None else max(emb_dim // 4, 16)
        self.emb_dim = emb_dim
        self.num_classes = num_classes
        self.fourier = SinusoidalEmbedding(num_channels=2 * num_freqs, min_freq=min_freq, max_freq=max_freq)
        self.linear0 = nn.Linear(2 * num_freqs, emb_dim)
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.linear1 = nn.Linear(emb_dim, emb_dim)

    def forward(self, noise_label: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int) -> torch.Tensor:
        """Return the [batch_size, emb_dim] conditioning vector; validates shapes and label range."""
        like = self.linear0.weight
        noise_label = check_noise_label(noise_label, batch_size, like)
        y = check_class_labels(y, self.num_classes, batch_size)
        h = self.linear0(self.fourier(noise_label).to(like.dtype))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=h.device)
            h = h + self.label_emb(y)
        return self.linear1(nn.functional.silu(h))
