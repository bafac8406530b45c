"""Exact counting of score evaluations (NFE) by wrapping the score function."""

from __future__ import annotations

import math

from torch import Tensor

from sde import ScoreFn


class CountingScoreFn:
    """A score_fn wrapper counting calls (NFE), evaluated samples and the range of times it was asked for."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.reset()

    def reset(self) -> None:
        """Zero the counters."""
        self.nfe, self.evaluations = 0, 0
        self.t_min_seen, self.t_max_seen = math.inf, -math.inf

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        self.evaluations += x.shape[0]
        self.t_min_seen = min(self.t_min_seen, float(t.min()))
        self.t_max_seen = max(self.t_max_seen, float(t.max()))
        return self.score_fn(x, t)


def count_nfe(score_fn: ScoreFn) -> CountingScoreFn:
    """Wrap score_fn so that `.nfe` counts its calls (one call = one batched network evaluation)."""
    return CountingScoreFn(score_fn)
