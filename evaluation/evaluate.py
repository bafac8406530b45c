"""`main.py --mode eval`: bits/dim (probability-flow ODE and the discrete bound) and, on request, sample quality."""

from __future__ import annotations

import logging
import os

from infra.io import atomic_write_json

logger = logging.getLogger(__name__)


def run_eval(cfg, workdir: str) -> dict:
    """Evaluate the latest checkpoint in workdir; results go to workdir/eval/ and tensorboard, and are returned."""
    from evaluation.likelihood_eval import run_likelihood_eval
    from infra import distributed

    results = {"likelihood": run_likelihood_eval(cfg, workdir)}  # sharded under torchrun; every rank gets it all
    if cfg.eval.sample_metrics:
        from evaluation.quality import run_quality_eval

        results["quality"] = run_quality_eval(cfg, workdir)
    if cfg.eval.inception_metrics and distributed.setup(cfg).is_main:  # one pass over the samples, on rank 0
        from evaluation.inception import run_inception_eval

        results["inception"] = run_inception_eval(cfg, workdir)
        logger.info("Inception metrics: %s", results["inception"])
    if not distributed.setup(cfg).is_main:  # rank 0 writes
        return results
    path = os.path.join(workdir, "eval", "results.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_json(path, results)
    logger.info("evaluation results written to %s", path)
    return results
