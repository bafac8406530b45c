"""VE SDE on MNIST, sigma in [0.01, 50] (NCSN defaults; 50 is about the largest pixel-space distance of digits)."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "ve"
    cfg.sampling.predictor = "reverse_diffusion"
    cfg.sampling.corrector = "langevin"
    return cfg
