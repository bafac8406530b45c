"""Class-conditional toy run: the labelled 2-D Gaussian mixture (4 modes, one class each) with a conditional MLP;
exact conditional scores and class posteriors are known, so guided samples can be checked (tests, docs)."""

from configs.toy_gmm import get_config as get_toy_config


def get_config():
    cfg = get_toy_config()
    cfg.model.num_classes = 4  # the 'gmm' data set labels its 4 components 0..3; label 4 is the null label
    cfg.training.p_uncond = 0.2  # label dropout: the unconditional score needs enough of the batch
    cfg.sampling.label = 0  # sample class 0 by default
    cfg.sampling.guidance_scale = 1.0  # plain conditional sampling
    cfg.classifier.n_iters = 1000  # the noisy MLP classifier of the mixture trains in seconds
    cfg.classifier.batch_size = 256
    return cfg
