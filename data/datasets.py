"""Data objects for training: the ONE place where pixels become model-space data, plus exact-resume batching.

Pixel -> model space (images)::

    x01   = (pixel + u) / 256,  u ~ U[0, 1) per pixel (dequantize=True) or u = 1/2 (dequantize=False)
    x     = 2 * x01 - 1          in [-1, 1)

Likelihood bookkeeping (D = pixels per image): the map x01 -> x has log|det J| = D * log 2 per image, so
``log p_x01(x01) = log p_x(x) + D log 2``; the bin width of the uniform dequantization is 1/256 in x01-space,
so the discrete log-likelihood bound is ``log P(pixels) >= E_u[log p_x(x)] + D log 2 - D log 256`` and
``bits/dim = nll_x / (D ln 2) + 7`` (computed in likelihood.bpd.bits_per_dim).

Every data object has the same interface:

* ``batch(batch_size, generator) -> (x, y)``: ``x`` float32 ``[B, *sample_shape]``; ``y`` int64 ``[B]`` or ``None``;
* ``sample_shape``: shape of one sample (``(1, 28, 28)`` for MNIST, ``(2,)`` for toy sets);
* ``state_dict()`` / ``load_state_dict(state)``: position of the batch stream, so resume is exact (the caller
  also restores its ``torch.Generator``, which supplies dequantization noise / toy samples).

:data:`DATASETS` maps names to factories; :func:`make_dataset` is the public entry point.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .cifar10 import load_cifar10, resize_pixels
from .mnist import load_mnist
from .toy import GaussianMixture, make_mixture  # noqa: F401
from .toy2d import TOY2D

logger = logging.getLogger(__name__)

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant used to derive per-epoch seeds


def data_to_model(x01: torch.Tensor) -> torch.Tensor:
    """Map data in [0, 1] to model space [-1, 1]: ``2 * x01 - 1`` (log|det J| = D log 2)."""
    return 2 * x01 - 1


def model_to_data(x: torch.Tensor) -> torch.Tensor:
    """Map model space [-1, 1] back to [0, 1]: ``(x + 1) / 2``."""
    return (x + 1) / 2


def dequantize_and_scale(
    images_uint8: torch.Tensor, generator: torch.Generator | None = None, dequantize: bool = True
) -> torch.Tensor:
    """Pixels -> model space: ``2 * (pixel + u) / 256 - 1`` with u ~ U[0,1) (or u = 1/2 if not dequantize)."""
    if not isinstance(images_uint8, torch.Tensor) or images_uint8.dtype != torch.uint8:
        got = images_uint8.dtype if isinstance(images_uint8, torch.Tensor) else type(images_uint8).__name__
        raise TypeError(f"dequantize_and_scale expects a torch.uint8 tensor of pixels, got {got}")
    pixels = images_uint8.to(torch.float32)
    if dequantize:
        u = torch.rand(pixels.shape, generator=generator, dtype=torch.float32, device=pixels.device)
    else:
        u = torch.full_like(pixels, 0.5)
    return data_to_model((pixels + u) / 256.0)


def to_uint8(x_model: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> uint8 pixels: ``floor(256 * (x + 1) / 2)`` clipped to 0..255 (inverts dequantization)."""
    return torch.floor(model_to_data(x_model.detach().float()) * 256).clamp(0, 255).to(torch.uint8)


class EpochSampler:
    """Replacement-free index stream: a fresh permutation of ``range(n)`` per epoch, resumable exactly."""

    def __init__(self, n: int, seed: int = 0):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"EpochSampler needs a positive number of items, got n={n!r}")
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0
        self.index = 0
        self._perm: torch.Tensor | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The permutation used in ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
        g = torch.Generator().manual_seed((self.seed * _MIX + epoch) % (1 << 63))
        return torch.randperm(self.n, generator=g)

    def next_indices(self, k: int) -> torch.Tensor:
        """The next ``k`` indices, continuing into the next epoch(s) when the current one runs out."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"batch size must be a positive int, got {k!r}")
        k = int(k)
        out = []
        while k > 0:
            if self._perm is None:
                self._perm = self.permutation(self.epoch)
            take = min(k, self.n - self.index)
            out.append(self._perm[self.index : self.index + take])
            self.index += take
            k -= take
            if self.index == self.n:
                self.epoch, self.index, self._perm = self.epoch + 1, 0, None
        return torch.cat(out)

    def state_dict(self) -> dict[str, int]:
        """Position in the stream: ``{"epoch", "index", "seed", "n"}``."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict` (``n`` must match this dataset)."""
        missing = {"epoch", "index", "seed"} - set(state)
        if missing:
            raise KeyError(f"sampler state is missing {sorted(missing)}; got keys {sorted(state)}")
        if "n" in state and int(state["n"]) != self.n:
            raise ValueError(f"sampler state is for {state['n']} items but this dataset has {self.n}")
        if not 0 <= int(state["index"]) < self.n or int(state["epoch"]) < 0:
            raise ValueError(f"bad sampler position epoch={state['epoch']}, index={state['index']} for n={self.n}")
        self.seed, self.epoch, self.index = int(state["seed"]), int(state["epoch"]), int(state["index"])
        self._perm = None


class ImageData:
    """uint8 images [N,H,W] or [N,C,H,W] (+ optional labels) served as dequantized model-space batches [B,C,H,W]."""

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | None = None,
        dequantize: bool = True,
        seed: int = 0,
        description: str = "",
        random_flip: bool = False,
    ):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            raise TypeError(f"ImageData expects uint8 pixels, got {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"ImageData expects images [N,H,W] or [N,C,H,W] with N > 0, got {tuple(images.shape)}")
        if labels is not None:
            labels = torch.as_tensor(labels).to(torch.int64)
            if labels.shape != (images.shape[0],):
                raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        self.images = images.contiguous()
        self.labels = labels
        self.dequantize = dequantize
        self.description = description
        self.random_flip = random_flip  # horizontal flips with probability 1/2 (Ho et al. 2020; Song et al. 2021)
        self.sampler = EpochSampler(images.shape[0], seed=seed)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.images.shape[1:])

    def take(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model-space images and labels at ``indices`` (no effect on the batch stream); with random_flip each image
        is mirrored left-right with probability 1/2 (drawn from ``generator`` before the dequantization noise)."""
        pixels = self.images[indices]
        if self.random_flip:
            flip = torch.rand(pixels.shape[0], generator=generator) < 0.5
            pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
        x = dequantize_and_scale(pixels, generator=generator, dequantize=self.dequantize)
        y = None if self.labels is None else self.labels[indices]
        return x, y

    def batch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next batch from the epoch permutation; ``generator`` supplies the dequantization noise."""
        return self.take(self.sampler.next_indices(batch_size), generator=generator)

    def state_dict(self) -> dict[str, int]:
        """Batch-stream position (epoch, index, permutation seed)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the batch-stream position saved by :meth:`state_dict`."""
        self.sampler.load_state_dict(state)


class ToyData:
    """A 2-D toy distribution: every batch is a fresh sample drawn with the caller's generator; labels are None."""

    def __init__(self, name: str, **options: Any):
        if name not in TOY2D:
            raise ValueError(f"unknown toy dataset {name!r}; expected one of {sorted(TOY2D)}")
        sampler = TOY2D[name]
        try:
            inspect.signature(sampler).bind(1, None, **options)
        except TypeError as exc:
            raise TypeError(f"bad options {options} for toy dataset {name!r}: {exc}") from exc
        self.name = name
        self.options = options
        self.description = f"toy 2-D dataset {name!r} {options or ''}".strip()
        self._sampler = sampler

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(2,)``."""
        return (2,)

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        """Fresh ``[batch_size, 2]`` samples drawn with ``generator``."""
        return self._sampler(batch_size, generator, **self.options), None

    def state_dict(self) -> dict[str, int]:
        """Toy sets are stateless (all randomness comes from the generator)."""
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Accept the empty state of :meth:`state_dict`."""
        if state:
            raise ValueError(f"toy dataset {self.name!r} has no state, got {state}")


def _make_mnist(
    source: str = "auto",
    root: str | None = None,
    split: str = "train",
    dequantize: bool = True,
    seed: int = 0,
    digits: tuple[int, ...] | None = None,
    **load_kwargs: Any,
) -> ImageData:
    """MNIST as :class:`ImageData`, optionally restricted to some ``digits``; ``load_kwargs`` go to load_mnist."""
    images, labels, description = load_mnist(source=source, root=root, split=split, **load_kwargs)
    if digits is not None:
        bad = [d for d in digits if d not in range(10)]
        if bad or not digits:
            raise ValueError(f"digits must be a non-empty subset of 0..9, got {digits!r}")
        keep = np.isin(labels, list(digits))
        images, labels = images[keep], labels[keep]
        description += f"; digits {sorted(digits)} only ({len(images):,} images)"
    return ImageData(images, labels, dequantize=dequantize, seed=seed, description=description)


def _make_cifar10(
    root: str = "data/cifar10",
    split: str = "train",
    dequantize: bool = True,
    seed: int = 0,
    image_size: int = 32,
    random_flip: bool = True,
    download: bool = False,
) -> ImageData:
    """CIFAR-10 as :class:`ImageData` (data/cifar10.py), box-filtered to ``image_size`` if below 32."""
    images, labels, description = load_cifar10(root, split=split, download=download)
    if image_size != images.shape[-1]:
        images = resize_pixels(images, image_size)
        description += f", resized to {image_size}x{image_size}"
    return ImageData(images, labels, dequantize=dequantize, seed=seed, description=description, random_flip=random_flip)


def _toy_factory(name: str) -> Callable[..., ToyData]:
    def factory(**options: Any) -> ToyData:
        return ToyData(name, **options)

    factory.__doc__ = f"Toy 2-D dataset {name!r}; options are passed to the sampler."
    return factory


# Name -> factory(**kwargs) returning an object with batch()/sample_shape/state_dict()/load_state_dict().
# The Gaussian-mixture oracle ("gmm", from data/toy.py) is registered here by the lead.
DATASETS: dict[str, Callable[..., Any]] = {
    "mnist": _make_mnist,
    "cifar10": _make_cifar10,
    **{name: _toy_factory(name) for name in TOY2D},
    "gmm": lambda dim=2, seed=0, **_: make_mixture("gmm2d", dim=dim, seed=seed),  # the exact-score oracle
}


def make_dataset(name: str, **kwargs: Any) -> Any:
    """Build the data object registered as ``name`` in :data:`DATASETS` with ``kwargs``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](**kwargs)
