"""`main.py --mode import`: another framework's checkpoint into a work dir of ours (docs/checkpoints.md)."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

FORMATS = ("score_sde", "diffusers")


def run_import(cfg, workdir: str) -> Path:
    """Import cfg.convert.checkpoint (format cfg.convert.format) into `workdir`; return the checkpoint written."""
    c = cfg.convert
    if c.format == "score_sde":
        from .import_score_sde import import_score_sde

        path = import_score_sde(
            c.checkpoint, workdir, cfg=None if c.peer_config else cfg, peer_config=c.peer_config or None
        )
    elif c.format == "diffusers":
        from .import_diffusers import import_diffusers

        path = import_diffusers(c.checkpoint, workdir)
    else:
        raise ValueError(f"unknown convert.format {c.format!r}; valid: {list(FORMATS)}")
    print(f"imported {c.checkpoint} into {path}; sample with --mode sample --workdir {workdir}", flush=True)
    return path
