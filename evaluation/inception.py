"""Inception-feature FID, KID and Inception Score of image samples, through torch-fidelity (Obukhov et al. 2020).

Why torch-fidelity (pinned 0.4.0, extra `fid`): it computes all three in one pass over the samples with a
bit-exact port of the TensorFlow Inception-v3 that TF-GAN (and so score_sde's published FIDs) used; it reads the
Inception weights from a local file (`feature_extractor_weights_path`), so nothing is downloaded at run time; it is
maintained and takes image tensors directly. pytorch-fid computes FID only, clean-fid no IS.

The reference is the checkpoint's own data set (CIFAR-10: the 50,000 training images, as score_sde and Ho et al.
report). The samples are an .npz written by --mode sample (under torchrun each rank draws its own batches, each
batch from its own seed: `torchrun --nproc_per_node=8 main.py --mode sample --config.sampling.num_samples=50000`),
scored once on rank 0.

Offline here: PyPI's torchvision (torch-fidelity imports it at top level) does not import beside the CPU torch
build CI installs, so CI checks this module's calls through a stand-in of `torch_fidelity.calculate_metrics`; where
the library imports, tests/test_inception.py also runs it for real with a small registered feature extractor.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's Inception (TF 2015-12-05 graph)
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
EXTRACTOR = "inception-v3-compat"
KEYS = {  # torch-fidelity's result keys -> ours
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "inception_score_mean": "is_mean",
    "inception_score_std": "is_std",
}


class RGBImages(Dataset):
    """uint8 images [N, C, H, W] (C = 1 or 3) as the uint8 RGB [3, H, W] items torch-fidelity reads."""

    def __init__(self, images: torch.Tensor | np.ndarray):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images [N, 1 or 3, H, W], got {images.dtype} {list(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i]
        return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


def check_weights(path: str | os.PathLike) -> Path:
    """The Inception weights file, or FileNotFoundError saying which file to put where."""
    path = Path(str(path))
    if not str(path) or not path.is_file():
        raise FileNotFoundError(
            f"Inception weights {str(path)!r} not found: download {WEIGHTS_URL} once (about 92 MB) and set "
            f"eval.inception_weights to the file"
        )
    return path


def inception_metrics(
    samples, reference, weights: str | os.PathLike | None, device="cpu", batch_size: int = 64,
    kid_subset_size: int = 1000, isc_splits: int = 10, feature_extractor: str = EXTRACTOR,
) -> dict:  # fmt: skip
    """FID and KID of `samples` against `reference` and the IS of `samples` (both uint8 [N, C, H, W]), with the
    Inception weights file `weights` (None only for another registered `feature_extractor`)."""
    if feature_extractor == EXTRACTOR:
        weights = check_weights(weights)
    try:
        import torch_fidelity
    except Exception as err:  # noqa: BLE001 - ImportError, or torchvision's own failure to load
        raise ImportError(
            f"Inception metrics need torch-fidelity (pip install -e '.[fid]', with a torchvision that matches your "
            f"torch): {err}"
        ) from None
    samples, reference = RGBImages(samples), RGBImages(reference)
    metrics = torch_fidelity.calculate_metrics(
        input1=samples,
        input2=reference,
        cuda=torch.device(device).type == "cuda",
        batch_size=batch_size,
        fid=True,
        kid=True,
        isc=True,
        feature_extractor=feature_extractor,
        feature_extractor_weights_path=None if weights is None else str(weights),
        kid_subset_size=min(kid_subset_size, len(samples), len(reference)),
        isc_splits=isc_splits,
        cache=False,
        verbose=False,
    )
    out = {ours: float(metrics[theirs]) for theirs, ours in KEYS.items()}
    return out | {"num_samples": len(samples), "num_reference": len(reference), "feature_extractor": feature_extractor}


def newest_samples(workdir: str | os.PathLike) -> Path:
    """The newest samples .npz that --mode sample wrote in `workdir`/samples."""
    found = sorted(Path(workdir, "samples").glob("*.npz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no samples in {Path(workdir, 'samples')}: run --mode sample first")
    return found[-1]


def run_inception_eval(cfg, workdir: str) -> dict:
    """--mode eval with eval.inception_metrics: FID / KID / IS of the samples .npz (eval.inception_samples, or the
    newest in the work dir) against the eval.inception_reference split of the checkpoint's data set."""
    import json

    from compose.build import load_eval_images
    from compose.checkpoints import eval_data_config
    from data.datasets import to_uint8
    from infra.checkpoint import read_checkpoint

    e = cfg.eval
    path = Path(e.inception_samples) if e.inception_samples else newest_samples(workdir)
    with np.load(path) as data:
        samples = to_uint8(torch.from_numpy(data["samples"]))
    _, ckpt = read_checkpoint(cfg.sampling.checkpoint or workdir)
    reference, description = load_eval_images(eval_data_config(cfg, json.loads(ckpt["config"])), e.inception_reference)
    out = inception_metrics(samples, reference, e.inception_weights, cfg.device, batch_size=e.batch_size,
                            kid_subset_size=e.kid_subset_size)  # fmt: skip
    return out | {"samples": str(path), "reference": description}
