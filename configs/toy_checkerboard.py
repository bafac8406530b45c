"""Toy run: the 2-D checkerboard with an MLP (a demo of a hard, non-Gaussian density)."""

from configs.toy_gmm import get_config as get_toy_config


def get_config():
    cfg = get_toy_config()
    cfg.data.dataset = "checkerboard"
    cfg.model.hidden = 256
    cfg.model.depth = 4
    cfg.training.n_iters = 5000
    return cfg
