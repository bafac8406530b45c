"""VP SDE on MNIST with continuous-time DSM: the CPU-sized default recipe (about 25 minutes on 2 cores).

Why these values: a thin-at-28x28 U-Net (1.06M parameters, 0.5-0.7 s per batch-64 step on 2 CPU cores) trained
2,500 steps (32 epochs of the 5,000 offline digits), lr 2e-3 with 200 warm-up steps and cosine decay to 1e-4 (the
late low-lr phase sharpens strokes), EMA 0.999 (about the last 1,000 steps averaged). At 1,000 steps of the same
schedule (stretched to 4,000) the EMA samples were already mostly digit-like; at 2,000 most were recognisable.
"""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "vp"
    cfg.training.loss = "continuous"
    cfg.training.n_iters = 2500
    cfg.training.snapshot_every = 1000
    cfg.training.snapshot_steps = 100
    cfg.training.checkpoint_every = 500
    return cfg
