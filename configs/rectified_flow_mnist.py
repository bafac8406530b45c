"""Rectified flow / flow matching on MNIST (Liu et al. 2023; Lipman et al. 2023): the linear interpolant
x_t = (1 - t) x_0 + t noise on [0, 0.999], t uniform, the noise predicted (the flow-matching velocity is
v = (eps - x_t) / (1 - t) in terms of it), sampled by the probability-flow ODE (= the flow) with DPM-Solver++(2M)."""

from configs.vp_mnist import get_config as get_vp_config


def get_config():
    cfg = get_vp_config()  # the same network, learning-rate schedule and length as the default recipe
    cfg.sde.name = "rectified_flow"
    cfg.sde.T = 0.999
    cfg.training.loss = "continuous"  # t ~ U[t_min, T], the usual flow-matching time distribution
    cfg.sampling.sampler, cfg.sampling.steps, cfg.sampling.grid = "dpm_solver", 20, "logsnr"
    cfg.eval.bound_spacing = "logsnr"
    return cfg
