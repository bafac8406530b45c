"""Random-number-generator state as tensors and plain data, so checkpoints restore it exactly (and load with
`weights_only=True`): the loop's own torch.Generators, the global torch CPU RNG (dropout), CUDA, numpy, `random`;
and the SIGTERM/SIGINT handler that turns a stop request into a checkpoint."""

from __future__ import annotations

import random
import signal
import sys
import threading

import numpy as np
import torch


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """Every RNG state the training loop depends on, as tensors and plain data."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "generators": {name: g.get_state() for name, g in generators.items()},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    """Restore what `rng_state` captured (CUDA states only when this machine has the same devices)."""
    missing = set(generators) - set(state["generators"])
    if missing:
        raise KeyError(f"checkpoint has no RNG state for generators {sorted(missing)}")
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    set_global_rng_state(state)


def set_global_rng_state(state: dict) -> None:
    """Restore the global RNGs (torch CPU for dropout, CUDA, numpy, `random`) captured by `rng_state`."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def seed_everything(seed: int) -> None:
    """Seed the global torch (CPU and CUDA), numpy and `random` RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class GracefulStop:
    """SIGTERM/SIGINT only set `signum`; the training loop finishes its step, saves a checkpoint and exits with
    EXIT_INTERRUPTED. A second signal aborts at once (checkpoints are atomic, so that is safe too)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: aborting without a checkpoint")
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step, then saving a checkpoint "
            f"(send it again to abort at once)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def name(self) -> str:
        """Name of the signal received (e.g. 'SIGTERM')."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
