"""VP SDE on MNIST with continuous-time DSM: the CPU-sized default recipe (about 30 minutes on 2 cores).

Why these values: a thin-at-28x28 U-Net (1.06M parameters, ~0.4 s per batch-64 step on 2 CPU cores) trained
4,000 steps, lr 2e-3 with 200 warm-up steps and cosine decay to 1e-4 (the late low-lr phase sharpens strokes),
EMA 0.999 (about the last 1,000 steps averaged).
"""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "vp"
    cfg.training.loss = "continuous"
    cfg.training.n_iters = 4000
    cfg.training.snapshot_every = 1000
    cfg.training.snapshot_steps = 100
    cfg.training.checkpoint_every = 500
    return cfg
