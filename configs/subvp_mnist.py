"""Sub-VP SDE on MNIST (better likelihoods than VP, Song et al. 2021, Table 2)."""

from configs.default import get_default_config


def get_config():
    cfg = get_default_config()
    cfg.sde.name = "subvp"
    return cfg
