"""VP SDE on MNIST with continuous-time DSM: the CPU-sized default recipe (about 30 minutes on 2 cores)."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "vp"
    cfg.training.loss = "continuous"
    return cfg
