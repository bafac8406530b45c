"""Exponential moving average of network weights, the weights used for sampling (Song et al. 2021, App. D;
the warm-up of the decay follows TensorFlow's ExponentialMovingAverage with num_updates)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy of a network whose parameters track theta_ema <- d theta_ema + (1 - d) theta after each step."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    def decay_at(self, num_updates: int) -> float:
        """Decay after `num_updates` updates: min(decay, (1 + n) / (10 + n)), so early averages are not stale."""
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def update(self, net: nn.Module, num_updates: int) -> None:
        """Move the shadow weights towards `net`'s; buffers are copied."""
        d = self.decay_at(num_updates)
        for ema_p, p in zip(self.net.parameters(), net.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.net.buffers(), net.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        """The shadow network's state dict."""
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the shadow weights."""
        self.net.load_state_dict(state)
