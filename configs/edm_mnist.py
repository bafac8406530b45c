"""EDM on MNIST (Karras et al. 2022): the path sigma(t) = t up to sigma_max = 80, the network preconditioned with
c_skip, c_out, c_in, c_noise (sigma_data = 0.5), log-normal noise levels ln sigma ~ N(-1.2, 1.2^2) with EDM's loss
weighting, sampled on the Karras grid (rho = 7) down to sigma_min = 0.002 with DPM-Solver++(2M) in 20 steps."""

from configs.vp_mnist import get_config as get_vp_config


def get_config():
    cfg = get_vp_config()  # the same network, learning-rate schedule and length as the default recipe
    cfg.sde.name = "edm"
    cfg.sde.sigma_max = 80.0
    cfg.model.parameterization = "edm"
    cfg.model.sigma_data = 0.5
    cfg.training.loss = "lognormal"  # P_mean = -1.2, P_std = 1.2 (training.p_mean, training.p_std)
    cfg.training.weighting = "edm"  # lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
    cfg.sampling.sampler, cfg.sampling.steps = "dpm_solver", 20
    cfg.sampling.grid = "karras"  # the grid of the recipe's measured figures (docs/paths.md); "default" is log-SNR
    cfg.sampling.t_min = 0.002  # EDM's sigma_min
    cfg.eval.bound_spacing = "logsnr"  # a bound grid uniform in t = sigma would waste its steps at large noise
    return cfg
