"""Test-session settings: one intra-op thread (tiny models run fastest so on a shared 2-core machine)."""

import torch

torch.set_num_threads(1)
