"""Discrete DDPM on MNIST: N = 1000 steps, betas 1e-4..0.02, L_simple (Ho et al. 2020), ancestral sampling."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "ddpm"
    cfg.training.loss = "ddpm"  # i uniform on 1..N, ||noise - eps_theta||^2
    cfg.sampling.sampler = "ancestral"
    # The uniform grid from T = 1 to t_min = 1/N in N - 1 steps is the chain's own times i/N, i = N..1, so the
    # ancestral sampler (with its final Tweedie step at t = 1/N) is DDPM's Alg. 2 exactly.
    cfg.sampling.steps = cfg.sde.N - 1
    cfg.sampling.t_min = 1.0 / cfg.sde.N
    cfg.sampling.grid = "uniform"
    return cfg
