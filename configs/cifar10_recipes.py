"""score_sde's CIFAR-10 recipes (Song et al. 2021, App. H; yang-song/score_sde_pytorch configs/{vp,subvp,ve}/), one
function for all of them; each configs/cifar10_*.py picks one.

Their hyper-parameters: batch 128, Adam lr 2e-4 with 5,000 warm-up steps and no decay, gradient clipping 1,
EMA 0.9999 (VP, sub-VP) or 0.999 (VE), dropout 0.1, random horizontal flips, no dequantisation, t ~ U[1e-5, 1],
1.3M iterations (950k for the deep variants, 8 residual blocks per level instead of 4). DDPM++ (VP, sub-VP): data
in [-1, 1], positional embedding of 999 t, no FIR. NCSN++ (VE): data in [0, 1] (our model space is [-1, 1], so the
path's sigmas are doubled: sigma_min 0.02, sigma_max 100 here are their 0.01 and 50), FIR resampling, the residual
input pyramid, Fourier features of log sigma, output divided by sigma. Sampling as theirs: Euler-Maruyama, no
corrector (VP, sub-VP); reverse diffusion + Langevin, snr 0.16 (VE); 1,000 steps.

Differences that remain: their loss is a sum over pixels for VE (reduce_mean False), ours a mean (Adam is nearly
invariant to the scale); their pixels map to [0, 1] as k / 255, ours as (k + 1/2) / 256 (data.dequantize False).
"""

from configs.default import get_default_config

SDES = ("vp", "subvp", "ve")
NETWORKS = ("ddpmpp", "ncsnpp", "ddpm")


def cifar10_recipe(sde: str, network: str, deep: bool = False):
    """The config of score_sde's configs/<sde>/cifar10_<network>[_deep]_continuous.py."""
    if sde not in SDES or network not in NETWORKS:
        raise ValueError(f"unknown recipe {sde}/{network}; valid: {SDES} x {NETWORKS}")
    cfg = get_default_config()
    cfg.sde.name, cfg.sde.N = sde, 1000
    cfg.sde.beta_min, cfg.sde.beta_max = 0.1, 20.0
    d = cfg.data
    d.dataset, d.root, d.image_size, d.num_channels = "cifar10", "data/cifar10", 32, 3
    d.random_flip, d.dequantize = True, False
    m = cfg.model
    m.name = "ddpm" if network == "ddpm" else "ncsnpp"
    m.parameterization, m.dropout = "score_sde", 0.1
    m.base_channels, m.channel_mult, m.attn_resolutions = 128, (1, 2, 2, 2), (16,)
    m.num_res_blocks = 2 if network == "ddpm" else (8 if deep else 4)
    m.centered = sde != "ve"
    if network == "ncsnpp":  # NCSN++ (Song et al. 2021, App. H.1)
        m.fir, m.progressive_input, m.embedding_type, m.scale_by_sigma = True, "residual", "fourier", True
    unit = 1.0 if m.centered else 2.0  # VE data in [0, 1]: twice the sigmas in [-1, 1]
    cfg.sde.sigma_min, cfg.sde.sigma_max = 0.01 * unit, 50.0 * unit
    t = cfg.training
    t.batch_size, t.n_iters = 128, 950_001 if deep else 1_300_001
    t.lr, t.warmup, t.lr_decay, t.grad_clip, t.weight_decay = 2e-4, 5000, "constant", 1.0, 0.0
    t.beta1, t.beta2, t.ema_decay = 0.9, 0.999, 0.999 if sde == "ve" else 0.9999
    t.loss, t.weighting, t.t_min = "continuous", "sigma2", 1e-5
    t.log_every, t.snapshot_every, t.checkpoint_every, t.snapshot_steps = 50, 50_000, 10_000, 1000
    s = cfg.sampling
    s.sampler, s.steps, s.snr = "pc", 1000, 0.16
    s.predictor, s.corrector = ("reverse_diffusion", "langevin") if sde == "ve" else ("euler_maruyama", "none")
    cfg.eval.split, cfg.eval.num_images = "test", 10_000
    return cfg
