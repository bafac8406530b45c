"""The one step loop every trainer runs (the score model, the noisy classifier, the MNIST evaluation net), so they
share its guarantees: a progress bar, non-finite steps skipped and a run stopped after `max_bad_steps` of them in a
row, checkpoints every `checkpoint_every` steps and at the end, and SIGTERM / SIGINT finishing the step, saving it
and exiting with EXIT_INTERRUPTED (75), agreed by all torchrun ranks. What a step does is the trainer's `step_fn`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from infra import distributed
from infra.state import GracefulStop

logger = logging.getLogger(__name__)

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; rerun the command to resume


def advance_schedule(scheduler, updated: bool) -> None:
    """Step the learning-rate schedule once per training step, also after a skipped (non-finite) update, so that
    the rate follows the step count and a resumed run has the same schedule. torch warns about a schedule stepped
    before its optimizer; after a deliberately skipped update that warning says nothing, so it is silenced there."""
    if updated:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        scheduler.step()


class TrainingInterrupted(SystemExit):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint (exit code 75: resumable)."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def run_steps(
    step_fn: Callable[[int], bool],
    checkpoint: Callable[[int], Path | None],
    *,
    start: int,
    n_iters: int,
    checkpoint_every: int,
    max_bad_steps: int,
    desc: str,
    last_good: Callable[[], Path | None] = lambda: None,
    after_step: Callable[[int, GracefulStop], dict | None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    dist: distributed.Dist | None = None,
    what: str = "steps",
) -> None:
    """Run steps start..n_iters-1 of `step_fn(step) -> updated` (False: a non-finite step, skipped by the step
    itself and agreed by all ranks), with the guarantees of the module docstring. `checkpoint(step)` is called on
    every rank (rank 0 writes). `after_step(done, stop)` runs after each step's checkpoint (logging, sample grids)
    and may return the progress bar's postfix; `on_step(done, rank)` is a caller's hook (tests send signals)."""
    dist = dist or distributed.Dist()
    if start >= n_iters:
        logger.warning("checkpoint step %d >= n_iters = %d: nothing to train", start, n_iters)
    bar = tqdm(
        range(start, n_iters), initial=start, total=n_iters, desc=desc, dynamic_ncols=True, disable=not dist.is_main
    )
    bad_in_row = 0
    with GracefulStop() as stop, bar:
        for step in bar:
            bad_in_row = 0 if step_fn(step) else bad_in_row + 1
            if bad_in_row >= max_bad_steps:
                raise TrainingDiverged(
                    f"{bad_in_row} consecutive {what} with a non-finite loss or gradient (training.max_bad_steps="
                    f"{max_bad_steps}) at step {step + 1}; stopping. The last good checkpoint is "
                    f"{last_good() or 'none (none was written yet)'}; it is kept. Try a lower learning rate or "
                    f"training.grad_clip, and check the data for non-finite values."
                )
            done = step + 1
            if done % checkpoint_every == 0 or done == n_iters:
                checkpoint(done)  # before the step's grid: a pre-empted job keeps this step
            if after_step is not None and (postfix := after_step(done, stop)):
                bar.set_postfix(**postfix)
            if on_step is not None:
                on_step(done, dist.rank)
            # Graceful stop, agreed by all ranks: the step is complete; rank 0 saves it; all exit with one code.
            if distributed.any_rank(stop.signum is not None, dist):
                path = checkpoint(done)
                distributed.barrier(dist)  # nobody exits (torchrun would then kill the rest) before the save
                if dist.is_main:
                    message = (
                        f"training interrupted by {stop.name or 'a signal to another rank'} after step "
                        f"{done}/{n_iters} ({desc}); "
                        f"{f'checkpoint saved to {path}' if path else 'nothing saved'}. Run the same command again "
                        f"to resume (exit code {EXIT_INTERRUPTED})."
                    )
                    logger.warning(message)
                    print(message, file=sys.stderr, flush=True)
                else:
                    print(
                        f"rank {dist.rank}: stopping after step {done} with the other ranks",
                        file=sys.stderr,
                        flush=True,
                    )
                raise TrainingInterrupted(EXIT_INTERRUPTED)
