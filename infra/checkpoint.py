"""Crash-safe checkpoint files: atomic writes, sha256 sidecars, `weights_only=True` loads, kinds and the training lock.

Layout: ``<workdir>/checkpoints/ckpt_000500.pt`` plus ``ckpt_000500.pt.sha256`` (``sha256sum -c`` format) for the
score model; the other kinds of network a work dir can hold have folders of their own (``KINDS``), so one mode's
retention never deletes, and one mode's newest file never shadows, another mode's checkpoints. Every checkpoint
records its kind, and a load asking for one kind refuses (and resume skips) a file of another.
A checkpoint is written to a temp file in the same folder, fsynced, renamed over its final name (``os.replace``)
and the folder fsynced; then its sidecar is written the same way. A checkpoint COUNTS only when the sidecar exists
and matches the file, so a save killed at any moment leaves every earlier checkpoint valid. Old checkpoints are
deleted only after the new one has been re-read from disk and its hash checked. Every load checks the hash and
uses ``torch.load(..., weights_only=True)``: no pickled code ever runs, and there is no fallback to unsafe loading.
Torch 2.13 honours ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` only when a call site leaves ``weights_only`` unset, so
the explicit ``weights_only=True`` here wins (tests/test_checkpoint.py checks this in a subprocess).
Contents are tensors and plain data only; the config is a JSON string and is never executed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
from pathlib import Path

import torch

from .io import atomic_write_bytes

logger = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
FORMAT = "scoresde-checkpoint-v1"
SCORE = "score_model"
# Kind of network -> (checkpoint folder, training lock file) inside a work dir. Checkpoints written before kinds had
# folders of their own all sit in checkpoints/; a kind whose folder is empty also looks there (for its kind only).
CLASSIFIER, EVALNET = "noisy_classifier", "mnist_evalnet"
KINDS = {
    SCORE: (CKPT_DIR, ".train.lock"),
    CLASSIFIER: ("checkpoints_classifier", ".train_classifier.lock"),
    EVALNET: ("checkpoints_evalnet", ".train_evalnet.lock"),
}
_NAME = re.compile(r"^ckpt_(\d{6,})\.pt$")


# The entries a checkpoint of each kind must hold to be usable (a file without them is refused like a corrupt one).
REQUIRED = {
    SCORE: ("step", "config", "model", "ema"),
    CLASSIFIER: ("step", "sde", "arch", "model"),
    EVALNET: ("step", "arch", "model", "results"),
}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, incomplete, corrupt, unsafe or incompatible (the message names the file)."""


# ---- Paths. ----------------------------------------------------------------------------------------------------------
def _kind_entry(kind: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; valid: {sorted(KINDS)}")
    return KINDS[kind]


def checkpoint_dir(workdir: str | os.PathLike, kind: str = SCORE) -> Path:
    """The folder holding a work dir's checkpoints of one kind (the score model's: checkpoints/)."""
    return Path(workdir) / _kind_entry(kind)[0]


def checkpoint_path(workdir: str | os.PathLike, step: int, kind: str = SCORE) -> Path:
    """Path of the checkpoint of `kind` written after `step` optimiser steps."""
    return checkpoint_dir(workdir, kind) / f"ckpt_{step:06d}.pt"


def stored_kind(ckpt: dict) -> str:
    """The kind a loaded checkpoint records (score-model checkpoints written before kinds were recorded have none)."""
    return ckpt.get("kind", SCORE)


def sidecar_path(path: str | os.PathLike) -> Path:
    """Path of the sha256 sidecar of a checkpoint file."""
    return Path(f"{path}.sha256")


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step number in a checkpoint's file name."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not named like a checkpoint (ckpt_XXXXXX.pt)")
    return int(match.group(1))


def list_checkpoints(workdir: str | os.PathLike, kind: str = SCORE) -> list[Path]:
    """Checkpoint files of one kind in a work dir (complete or not), oldest first."""
    folder = checkpoint_dir(workdir, kind)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if _NAME.match(p.name) and p.is_file()]
    return sorted(files, key=checkpoint_step)


# ---- Integrity. ------------------------------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's contents, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recorded_sha256(path: str | os.PathLike) -> str:
    """The sha256 recorded in a checkpoint's sidecar (raises CheckpointError if there is none)."""
    side = sidecar_path(path)
    try:
        text = side.read_text().split()
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} is incomplete: no sha256 sidecar {side.name} "
            f"(the save was interrupted, or the file was copied without it)"
        ) from None
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0]):
        raise CheckpointError(f"checkpoint sidecar {side} is malformed (expected '<sha256>  {Path(path).name}')")
    return text[0]


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise CheckpointError (naming the file) unless the file exists, is non-empty and matches its sidecar."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    expected = recorded_sha256(path)
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: sha256 {actual[:16]}... does not match "
            f"the recorded {expected[:16]}... ({path.stat().st_size} bytes)"
        )


def latest_checkpoint(workdir: str | os.PathLike, kind: str = SCORE) -> Path | None:
    """The newest checkpoint of `kind` in a work dir that passes verification (bad ones are skipped with a warning,
    kept)."""
    for path in reversed(list_checkpoints(workdir, kind)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as err:
            logger.warning("skipping %s; falling back to an earlier checkpoint", err)
    return None


# ---- Writing. --------------------------------------------------------------------------------------------------------
def _existing_valid(path: Path) -> bool:
    """True if a valid checkpoint is already at `path`; an invalid one is renamed to `<name>.corrupt-<time>`
    (evidence is kept, never deleted) so the new checkpoint can take its place."""
    if not path.exists():
        return False
    try:
        verify_checkpoint(path)
        return True
    except CheckpointError as err:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        logger.warning("%s; moving it to %s before writing a new one", err, aside.name)
        os.replace(path, aside)
        if sidecar_path(path).exists():
            os.replace(sidecar_path(path), sidecar_path(aside))
        return False


def save_checkpoint(
    workdir: str | os.PathLike, step: int, state: dict, keep: int = 3, kind: str = SCORE, overwrite: bool = False
) -> Path:
    """Atomically write `state` (tensors and plain data) as the step-`step` checkpoint of `kind`, verify it, prune
    that kind's folder to `keep`. A valid file at that step is kept unless `overwrite` (for a run that starts from
    scratch, where the step does not determine the state)."""
    folder = checkpoint_dir(workdir, kind)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".ckpt_*.tmp"):  # temp files of killed saves (single writer per work dir and kind)
        stale.unlink(missing_ok=True)
    path = checkpoint_path(workdir, step, kind)
    if not overwrite and _existing_valid(path):  # the step determines a resumed run's state: never rewritten
        logger.info("checkpoint %s already exists and is valid; not rewriting it", path.name)
        return path
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state, "kind": kind}, buffer)
    data = buffer.getvalue()
    digest = sha256_bytes(data)
    sidecar_path(path).unlink(missing_ok=True)  # an orphaned sidecar must not vouch for the new file
    try:
        atomic_write_bytes(path, data)
        atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    except OSError as err:  # disk full, quota, read-only folder: say which file, and that nothing older was touched
        older = [p.name for p in list_checkpoints(workdir, kind) if p != path]
        raise CheckpointError(
            f"could not write checkpoint {path} ({err.strerror or err}); the older checkpoints "
            f"{older or '(none)'} are intact. Free space or fix permissions, then rerun to resume"
        ) from None
    verify_checkpoint(path)  # re-read from disk before anything older is deleted
    _prune(workdir, keep, newest=path, kind=kind)
    return path


def _prune(workdir: str | os.PathLike, keep: int, newest: Path, kind: str) -> None:
    """Delete all but the `keep` newest checkpoints of `kind` (the verified `newest` is always kept)."""
    files = [p for p in list_checkpoints(workdir, kind) if checkpoint_step(p) <= checkpoint_step(newest)]
    for old in files[: max(len(files) - max(keep, 1), 0)]:
        sidecar_path(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
        logger.info("removed old checkpoint %s", old.name)


# ---- One training process per work dir. -----------------------------------------------------------------------------
class WorkdirLock:
    """An exclusive advisory lock on `<workdir>/.train.lock` (fcntl.flock), held while one process trains there
    (each kind of network has its own lock file, so training a classifier beside a score model is allowed).

    A second training process on the same work dir is refused at once instead of interleaving checkpoints with
    the first. The kernel drops the lock when its holder exits, even by SIGKILL, so a killed run never leaves a
    stale lock. The file stays (empty) after release; deleting it would race with a process that just opened it.
    On systems without fcntl (Windows) no lock is taken.
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True, kind: str = SCORE):
        self.path, self.enabled, self._fd = Path(workdir) / _kind_entry(kind)[1], enabled, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(
                f"work dir {self.path.parent} is in use: another training process holds "
                f"{self.path}. Wait for it to finish (or stop it), or train in another --workdir"
            ) from None
        except OSError as err:  # a file system without flock (some NFS mounts): train, but say it is unguarded
            os.close(fd)
            logger.warning(
                "cannot lock %s (%s): a second training process on this work dir would not be refused", self.path, err
            )
            return self
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        return False


# ---- Reading. --------------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Verify a checkpoint's sha256, then load it with weights_only=True onto the CPU (no code ever runs); with
    `kind`, refuse a checkpoint of another kind."""
    path = Path(path)
    verify_checkpoint(path)
    try:
        with open(path, "rb") as f:
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler refuses anything but tensors and plain data
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data checkpoint "
            f"(weights_only=True load failed: {str(err).splitlines()[0]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    if kind is not None and stored_kind(ckpt) != kind:
        raise CheckpointError(f"{path} holds a {stored_kind(ckpt)} checkpoint, not a {kind} one")
    missing = [key for key in REQUIRED.get(stored_kind(ckpt), ()) if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a complete scoresde {stored_kind(ckpt)} checkpoint: it lacks {missing}")
    return ckpt


def _workdir_of(target: Path, kind: str) -> Path:
    """The work dir meant by a work dir or by one of its checkpoint folders."""
    folder = _kind_entry(kind)[0]
    return target.parent if target.name == folder and not (target / folder).is_dir() else target


def _candidates(workdir: Path, kind: str) -> list[Path]:
    """Checkpoint files that may hold `kind`, newest first: its own folder, else (older layout) checkpoints/."""
    own = list_checkpoints(workdir, kind)
    return list(reversed(own or (list_checkpoints(workdir) if kind != SCORE else [])))


def read_checkpoint(workdir_or_file: str | os.PathLike, kind: str = SCORE) -> tuple[Path, dict]:
    """(path, contents), loaded once: a checkpoint file of `kind` itself, or the newest checkpoint of `kind` in a
    work dir (or in its checkpoint folder) that verifies and loads; broken ones and other kinds are skipped with a
    warning, kept."""
    target = Path(workdir_or_file)
    if target.is_file():
        return target, load_checkpoint(target, kind)
    if not target.is_dir():
        raise CheckpointError(f"no checkpoint file or work dir at {target}")
    path, ckpt = load_latest_checkpoint(_workdir_of(target, kind), kind)
    if path is None:
        workdir = _workdir_of(target, kind)
        raise CheckpointError(
            f"no valid checkpoint of a {kind} in {checkpoint_dir(workdir, kind)} "
            f"(found {[p.name for p in list_checkpoints(workdir, kind)]})"
        )
    return path, ckpt


def load_latest_checkpoint(workdir: str | os.PathLike, kind: str = SCORE) -> tuple[Path | None, dict | None]:
    """(path, contents) of the newest checkpoint of `kind` that verifies and loads; broken ones and checkpoints of
    other kinds are skipped, never deleted."""
    for path in _candidates(Path(workdir), kind):
        try:
            return path, load_checkpoint(path, kind)
        except CheckpointError as err:
            logger.warning("%s; falling back to an earlier checkpoint", err)
    return None, None
