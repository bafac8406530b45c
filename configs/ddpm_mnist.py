"""Discrete DDPM on MNIST: N = 1000 steps, betas 1e-4..0.02, L_simple (Ho et al. 2020), ancestral sampling."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "ddpm"
    cfg.training.loss = "ddpm"  # i uniform on 1..N, ||noise - eps_theta||^2
    cfg.sampling.sampler = "ancestral"
    cfg.sampling.steps = 1000
    return cfg
