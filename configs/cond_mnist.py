"""Class-conditional VP MNIST: one U-Net with a null label, trained with label dropout, so classifier-free
guidance (Ho & Salimans 2022) and classifier guidance both apply at sampling time (docs/guidance.md)."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "vp"
    cfg.training.loss = "continuous"
    cfg.model.num_classes = 10  # digits 0..9; label 10 is the null label of the unconditional score
    cfg.training.n_iters = 2500  # the vp_mnist recipe's length (about 25 minutes on 2 cores)
    cfg.training.snapshot_every = 1000
    cfg.training.snapshot_steps = 100
    cfg.training.p_uncond = 0.1  # label dropout: 10 % of the batch trains the unconditional score (Ho & Salimans)
    cfg.sampling.guidance_scale = 2.0  # w = 2: moderately guided (w = 1 plain conditional, w = 0 unconditional)
    cfg.sampling.class_grid = True  # a sample sheet cycles through the 10 digits
    cfg.sampling.num_samples = 100  # 10 rows x 10 columns
    cfg.sampling.batch_size = 100
    cfg.eval.num_samples = 500  # samples for FID / KID / accuracy (with eval.sample_metrics, eval.evalnet_workdir)
    cfg.classifier.base_channels = 16  # noisy classifier: 16-64-64 channels at 28-14-7, 0.32M parameters (CPU-sized)
    return cfg
