"""Test hooks, injected from the tests (production code has none): a signal sent to the training process after a
given step, and a checkpoint save slowed down half-way. In-process tests pass `signal_after(...)` as train's
`on_step`; subprocess tests run `python tests/hooks.py <main.py flags>` (also under torchrun) with

    SCORESDE_TEST_SIGNAL_AT_STEP="STEP[:SIGNAL[:RANK]]"   signal ourselves after STEP (on RANK only, if given)
    SCORESDE_TEST_SLOW_SAVE="SECONDS[@MIN_STEP]"           write half of each checkpoint file from MIN_STEP on to a
                                                           temp file, print a marker, sleep, then save normally
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

SIGNAL_ENV, SLOW_SAVE_ENV = "SCORESDE_TEST_SIGNAL_AT_STEP", "SCORESDE_TEST_SLOW_SAVE"


def signal_after(step: int, sig: str = "SIGTERM", rank: int | None = None):
    """An `on_step` callback that sends `sig` to this process after `step` (on `rank` only, if given)."""

    def on_step(done: int, this_rank: int) -> None:
        if done == step and rank in (None, this_rank):
            os.kill(os.getpid(), getattr(signal, sig))

    return on_step


def slow_checkpoint_writes(seconds: float, min_step: int = 0) -> None:
    """Make every checkpoint save from `min_step` on pause half-way (a kill then leaves a half-written temp file)."""
    import infra.checkpoint as checkpoint

    real = checkpoint.atomic_write_bytes

    def slow(path, data: bytes) -> None:
        path = Path(path)
        if path.name.startswith("ckpt_") and path.suffix == ".pt" and checkpoint.checkpoint_step(path) >= min_step:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.write(fd, data[: len(data) // 2])
            print(f"[test hook] slow save: {path.name} half written", flush=True)
            time.sleep(seconds)
            os.close(fd)
            os.unlink(tmp)
        real(path, data)

    checkpoint.atomic_write_bytes = slow


def install_from_environment() -> None:
    """Install the hooks that the environment variables above ask for."""
    if os.environ.get(SLOW_SAVE_ENV):
        seconds, _, min_step = os.environ[SLOW_SAVE_ENV].partition("@")
        slow_checkpoint_writes(float(seconds), int(min_step or 0))
    if os.environ.get(SIGNAL_ENV):
        step, sig, rank = (os.environ[SIGNAL_ENV].split(":") + ["", ""])[:3]
        import training.loop as loop

        loop.train = functools.partial(
            loop.train, on_step=signal_after(int(step), sig or "SIGTERM", int(rank) if rank else None)
        )


if __name__ == "__main__":  # python tests/hooks.py <main.py flags>
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    install_from_environment()
    from absl import app

    import main

    sys.argv = ["main.py", *sys.argv[1:]]
    app.run(main.main, flags_parser=main.parse_flags)
