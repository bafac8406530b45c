"""CIFAR-10 (Krizhevsky 2009) from the standard python-version archive, as uint8 images [N, 3, 32, 32] and labels.

The archive `cifar-10-python.tar.gz` (md5 c58f30108f718f92721af3b95e74349a, 170,498,071 bytes) holds pickled
batches `cifar-10-batches-py/data_batch_1..5` (train, 50,000) and `test_batch` (10,000), each a dict with b"data"
(uint8 [10000, 3072], channel-major rows) and b"labels". It is read from `root` (the archive, or the folder it
extracts to); `download=True` fetches it with a progress bar and checks the md5. The pickles are read by an
unpickler that builds only numpy arrays, lists and plain values: nothing else in the file can run.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
URL = "https://www.cs.toronto.edu/~kriz/" + ARCHIVE
FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The only globals a CIFAR-10 batch pickle needs (numpy arrays, as written by numpy 1.x or 2.x).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR-10 batch may hold only numpy arrays, not {module}.{name}")
        return super().find_class(module, name)


def read_batch(data: bytes, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) from one pickled CIFAR-10 batch."""
    try:
        batch = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise ValueError(f"{name} is not a readable CIFAR-10 batch: {err}") from None
    try:
        flat, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{name} is not a CIFAR-10 batch (needs b'data' and b'labels'): {err}") from None
    if flat.ndim != 2 or flat.shape[1] != 3 * 32 * 32 or flat.shape[0] != labels.shape[0]:
        raise ValueError(f"{name}: data of shape {flat.shape} with {labels.shape[0]} labels; expected [N, 3072]")
    return flat.reshape(-1, 3, 32, 32), labels


def _missing_message(root: Path) -> str:
    return (
        f"CIFAR-10 not found in {root}: put {ARCHIVE} (md5 {ARCHIVE_MD5}, from {URL}) or its extracted folder "
        f"{FOLDER}/ there, set data.root to where it is, or set data.source='download' when online"
    )


def _locate(root: Path, split: str, download: bool, progress: bool) -> tuple[Path, Path]:
    """(folder, archive) of CIFAR-10 under root, fetching the archive first if asked and absent."""
    if split not in BATCHES:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; valid: {list(BATCHES)}")
    folder, archive = root / FOLDER, root / ARCHIVE
    if not folder.is_dir() and not archive.is_file():
        if not download:
            raise FileNotFoundError(_missing_message(root))
        from .mnist import _fetch_checked  # the one checked, atomic downloader

        root.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s", URL)
        _fetch_checked(URL, archive, ARCHIVE_MD5, progress, timeout=60.0)
    return folder, archive


def check_cifar10(root: str | os.PathLike, split: str = "train", download: bool = False) -> None:
    """Raise (FileNotFoundError / ValueError, naming the file) unless `split` can be read: its batches are present
    and the first one is well-formed. For start-up checks: it reads one batch, not the split."""
    folder, archive = _locate(Path(root), split, download, progress=True)
    if folder.is_dir():
        missing = [name for name in BATCHES[split] if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing}: {_missing_message(Path(root))}")
        read_batch((folder / BATCHES[split][0]).read_bytes(), str(folder / BATCHES[split][0]))
        return
    with tarfile.open(archive, "r:gz") as tar:
        first = f"{FOLDER}/{BATCHES[split][0]}"
        names = set(tar.getnames())
        missing = [name for name in BATCHES[split] if f"{FOLDER}/{name}" not in names]
        if missing:
            raise ValueError(f"{archive} has no {missing}: not the CIFAR-10 python archive")
        read_batch(tar.extractfile(first).read(), f"{archive}:{first}")


def load_cifar10(root: str | os.PathLike, split: str = "train", download: bool = False, progress: bool = True):
    """(images uint8 [N, 3, 32, 32], labels int64 [N], description) of the `split` ("train" or "test")."""
    root = Path(root)
    folder, archive = _locate(root, split, download, progress)
    parts = []
    if folder.is_dir():
        for name in BATCHES[split]:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {_missing_message(root)}")
            parts.append(read_batch(path.read_bytes(), str(path)))
        source = str(folder)
    else:
        with tarfile.open(archive, "r:gz") as tar:
            for name in BATCHES[split]:
                try:
                    member = tar.extractfile(f"{FOLDER}/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise ValueError(f"{archive} has no {FOLDER}/{name}: not the CIFAR-10 python archive")
                parts.append(read_batch(member.read(), f"{archive}:{name}"))
        source = str(archive)
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return images, labels, f"CIFAR-10 {split} ({len(images):,} images) from {source}"


def resize_pixels(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images [N, C, 32, 32] box-filtered to size x size (32 must be a multiple of size), rounded."""
    n, c, h, w = images.shape
    if size == h:
        return images
    if size < 1 or h % size:
        raise ValueError(f"CIFAR-10 images are {h}x{w}; image_size {size} must divide {h}")
    f = h // size
    pooled = images.reshape(n, c, size, f, size, f).astype(np.float32).mean(axis=(3, 5))
    return np.clip(np.rint(pooled), 0, 255).astype(np.uint8)
