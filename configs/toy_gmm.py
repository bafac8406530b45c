"""Toy run: a 2-D Gaussian mixture (exact score known) with an MLP; trains in seconds, for tests and demos."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.data.dataset = "gmm"
    cfg.data.dim = 2
    cfg.model.name = "mlp"
    cfg.model.hidden = 128
    cfg.model.depth = 3
    cfg.model.dropout = 0.0
    cfg.training.batch_size = 256
    cfg.training.n_iters = 2000
    cfg.training.warmup = 100
    cfg.training.lr = 2e-3
    cfg.training.ema_decay = 0.99
    cfg.training.log_every = 50
    cfg.training.snapshot_every = 1000
    cfg.training.snapshot_samples = 512
    cfg.training.snapshot_steps = 100
    cfg.training.checkpoint_every = 500
    cfg.sampling.num_samples = 2000
    cfg.sampling.batch_size = 2000
    cfg.sampling.steps = 200
    cfg.eval.num_images = 512
    cfg.eval.batch_size = 512
    cfg.eval.bound = False
    return cfg
