"""Discrete NCSN/SMLD on MNIST: VE noise ladder of L levels, sigma^2-weighted DSM, annealed Langevin sampling."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "ve"
    cfg.sde.N = 232  # NCSNv2's rule of thumb for sigma_max/sigma_min = 5000 would be ~232 levels
    cfg.training.loss = "smld"
    cfg.sampling.sampler = "ald"
    cfg.sampling.steps = 232
    return cfg
