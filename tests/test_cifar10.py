"""CIFAR-10 from the python-version archive (data/cifar10.py), on tiny archives the tests write in that format."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from data.cifar10 import ARCHIVE, FOLDER, load_cifar10, resize_pixels
from data.datasets import make_dataset

BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_tiny_cifar10(root, per_batch: int = 4, seed: int = 0, extracted: bool = False):
    """A CIFAR-10 python archive (or its extracted folder) with `per_batch` random images in each of the 6 batches,
    pickled like the real one (dicts with b'data' uint8 [N, 3072] and b'labels'); returns the images by batch."""
    root.mkdir(parents=True, exist_ok=True)
    rng, batches = np.random.default_rng(seed), {}
    for name in BATCH_NAMES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        batches[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
    if extracted:
        (root / FOLDER).mkdir(exist_ok=True)
        for name, batch in batches.items():
            (root / FOLDER / name).write_bytes(pickle.dumps(batch, protocol=2))
    else:
        with tarfile.open(root / ARCHIVE, "w:gz") as tar:
            for name, batch in batches.items():
                raw = pickle.dumps(batch, protocol=2)
                info = tarfile.TarInfo(f"{FOLDER}/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    return batches


@pytest.mark.parametrize("extracted", [False, True], ids=["archive", "folder"])
def test_reads_both_splits_channel_major(tmp_path, extracted):
    batches = write_tiny_cifar10(tmp_path, extracted=extracted)
    images, labels, description = load_cifar10(tmp_path, "train")
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8 and labels.shape == (20,)
    first = batches["data_batch_1"]
    assert np.array_equal(images[0, 1, 0, :], first[b"data"][0, 1024:1056])  # green plane, top row
    assert labels[:4].tolist() == first[b"labels"]
    test, _, _ = load_cifar10(tmp_path, "test")
    assert np.array_equal(test.reshape(4, -1), batches["test_batch"][b"data"])
    assert "CIFAR-10 train (20 images)" in description


def test_missing_data_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"put cifar-10-python.tar.gz \(md5 c58f30108f718f92721af3b95e74349a"):
        load_cifar10(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="unknown CIFAR-10 split 'val'"):
        load_cifar10(tmp_path, "val")


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    """The batches are read by an unpickler that builds numpy arrays only: a pickle that would call a function
    is refused before the call."""
    (tmp_path / FOLDER).mkdir()
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in BATCH_NAMES:
        (tmp_path / FOLDER / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="may hold only numpy arrays, not io.open"):
        load_cifar10(tmp_path, "train")
    assert not marker.exists()


def test_download_is_checked_against_the_md5(tmp_path, monkeypatch):
    """`download=True` fetches the archive (here from a file:// URL) and keeps it only if the md5 matches."""
    import data.cifar10 as cifar

    source = tmp_path / "server"
    write_tiny_cifar10(source)
    monkeypatch.setattr(cifar, "URL", (source / ARCHIVE).as_uri())
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_cifar10(tmp_path / "a", "train", download=True, progress=False)
    assert not (tmp_path / "a" / ARCHIVE).exists()
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5((source / ARCHIVE).read_bytes()).hexdigest())
    images, _, _ = load_cifar10(tmp_path / "b", "train", download=True, progress=False)
    assert images.shape == (20, 3, 32, 32) and (tmp_path / "b" / ARCHIVE).is_file()


def test_random_flips_mirror_half_the_images_and_resizing_box_filters(tmp_path):
    write_tiny_cifar10(tmp_path, per_batch=40)
    data = make_dataset("cifar10", root=str(tmp_path), dequantize=False, random_flip=True, seed=0)
    plain = make_dataset("cifar10", root=str(tmp_path), dequantize=False, random_flip=False, seed=0)
    idx = torch.arange(200)
    x, _ = data.take(idx, torch.Generator().manual_seed(1))
    y, _ = plain.take(idx)
    flipped = (x == y.flip(-1)).flatten(1).all(1)
    same = (x == y).flatten(1).all(1)
    assert bool((flipped | same).all())  # every image is itself or its mirror image
    assert 70 < int((flipped & ~same).sum()) < 130  # about half of the 200 are mirrored
    blocks = np.repeat(np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16), 2, 2), 2, 3)
    assert np.array_equal(
        resize_pixels(np.broadcast_to(blocks, (1, 3, 32, 32)).copy(), 16)[0, 0], blocks[0, 0, ::2, ::2]
    )
    with pytest.raises(ValueError, match="must divide 32"):
        resize_pixels(np.zeros((1, 3, 32, 32), np.uint8), 12)


def test_a_recipe_trains_a_small_network_on_the_tiny_archive(tmp_path):
    """configs/cifar10_ddpmpp_continuous.py at a small width: two steps, a checkpoint, finite loss."""
    from configs.cifar10_ddpmpp_continuous import get_config
    from training.loop import train

    write_tiny_cifar10(tmp_path / "cifar")
    cfg = get_config()
    cfg.data.root, cfg.model.base_channels, cfg.model.num_res_blocks = str(tmp_path / "cifar"), 8, 1
    cfg.training.n_iters, cfg.training.batch_size, cfg.training.checkpoint_every = 2, 4, 2
    cfg.training.snapshot_every = 0
    train(cfg, tmp_path / "work")
    assert (tmp_path / "work" / "checkpoints" / "ckpt_000002.pt").is_file()


@pytest.mark.slow
def test_the_full_size_recipe_starts_through_main(tmp_path):
    """`python main.py --config configs/cifar10_ddpmpp_continuous.py --mode train` (61.8M parameters) takes two
    steps of batch 2 on the tiny archive (about 20 s on 2 CPU cores, 2.8 GB resident)."""
    import subprocess
    import sys
    from pathlib import Path

    write_tiny_cifar10(tmp_path / "cifar")
    cmd = [
        sys.executable,
        "main.py",
        "--config=configs/cifar10_ddpmpp_continuous.py",
        "--mode=train",
        f"--workdir={tmp_path / 'work'}",
        f"--config.data.root={tmp_path / 'cifar'}",
        "--config.training.n_iters=2",
        "--config.training.batch_size=2",
        "--config.training.checkpoint_every=2",
        "--config.training.snapshot_every=0",
    ]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "61,804,419 parameters" in proc.stderr


def test_the_start_up_check_reads_one_batch_and_names_what_is_missing(tmp_path):
    """check_cifar10 (used by the config validation) opens the split's files and parses its first batch only."""
    from data.cifar10 import check_cifar10

    write_tiny_cifar10(tmp_path / "a")
    check_cifar10(tmp_path / "a", "train")
    check_cifar10(tmp_path / "a", "test")
    write_tiny_cifar10(tmp_path / "b", extracted=True)
    (tmp_path / "b" / FOLDER / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['data_batch_4'\]"):
        check_cifar10(tmp_path / "b", "train")
    check_cifar10(tmp_path / "b", "test")
    with pytest.raises(FileNotFoundError, match="put cifar-10-python.tar.gz"):
        check_cifar10(tmp_path / "nowhere", "train")
