"""iDDPM's cosine schedule on MNIST (Nichol & Dhariwal 2021): its 1000-step chain with betas clipped at 0.999,
trained with L_simple on the chain's steps, sampled with the stochastic DPM-Solver++(2M) in 20 steps on the quadratic
grid (on the exact-score oracle, 20 steps with eta = 1: max |z| 3.9 on the quadratic grid, 14 on logSNR, 47 on uniform,
97 on Karras; `bench/paths.py` measures such combinations)."""

from configs.vp_mnist import get_config as get_vp_config


def get_config():
    cfg = get_vp_config()  # the same network, schedule of learning rates and length as the default recipe
    cfg.sde.name = "cosine"
    cfg.training.loss = "ddpm"  # i uniform on 1..N, ||noise - eps_theta||^2 (iDDPM's L_simple)
    cfg.sampling.sampler, cfg.sampling.steps, cfg.sampling.eta = "dpm_solver", 20, 1.0
    cfg.sampling.grid = "quadratic"
    # Start where lambda = -5.1 (diffusers' lambda_min_clipped for this schedule; VP's lambda_T is -5.0): at T the
    # clipped chain has alpha = 4.9e-5, and x0_hat = (x - sigma eps_hat) / alpha multiplied the network's error by
    # 2e4 (samples were noise, FID 124); the prior N(0, I) stands in for p_t there (alpha_t = 6e-3).
    cfg.sampling.t_max = 0.99608
    cfg.sampling.t_min = 1.0 / cfg.sde.N  # the chain's first step
    return cfg
