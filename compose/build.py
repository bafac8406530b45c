"""Build the objects a config describes: the path, the networks (score model, noisy classifier), the training data.
The one place where config keys become constructor arguments of sde/, models/ and data/."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from data.cifar10 import load_cifar10, resize_pixels
from data.datasets import make_dataset
from data.mnist import load_mnist, mirror_list
from data.toy import make_mixture
from models.classifier import NoisyClassifier, NoisyMLPClassifier
from models.ddpm import DDPM
from models.mlp import MLP
from models.ncsnpp import NCSNpp
from models.score import ScoreModel
from models.unet import UNet
from sde import SDE, make_sde, sde_parameters

IMAGE_DATASETS = ("mnist", "cifar10")


def make_sde_from_config(cfg) -> SDE:
    """The path named by cfg.sde.name, with the keys of cfg.sde that its constructor takes (the others are
    other paths' parameters)."""
    s = cfg.sde
    return make_sde(s.name, **{key: s[key] for key in sde_parameters(s.name)})


def data_shape(cfg) -> tuple[int, ...]:
    """Shape of one example: [C, H, W] for images, [d] for toy vectors."""
    if cfg.model.name == "mlp":
        return (cfg.data.dim,)
    return (cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)


def make_net(cfg):
    """The eps-network named by cfg.model.name."""
    m = cfg.model
    if m.name == "unet":
        return UNet(
            in_channels=cfg.data.num_channels,
            image_size=cfg.data.image_size,
            base_channels=m.base_channels,
            channel_mult=tuple(m.channel_mult),
            num_res_blocks=m.num_res_blocks,
            attn_resolutions=tuple(m.attn_resolutions),
            dropout=m.dropout,
            num_classes=m.num_classes,
        )
    if m.name == "mlp":
        return MLP(dim=cfg.data.dim, hidden=m.hidden, depth=m.depth, num_classes=m.num_classes)
    if m.name in ("ncsnpp", "ddpm"):
        return make_score_sde_net(cfg)
    raise ValueError(f"unknown model {m.name!r}; valid: ['unet', 'mlp', 'ncsnpp', 'ddpm']")


def make_score_sde_net(cfg):
    """NCSN++ / DDPM++ ("ncsnpp") or Ho et al.'s U-Net ("ddpm") with score_sde's options. Its `sigmas` buffer is
    score_sde's noise ladder in the network's data units (half the model-space sigmas when not centered)."""
    m, s = cfg.model, cfg.sde
    unit = 1.0 if m.centered else 2.0
    common = dict(
        image_size=cfg.data.image_size,
        num_channels=cfg.data.num_channels,
        centered=m.centered,
        nf=m.base_channels,
        ch_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions),
        dropout=m.dropout,
        resamp_with_conv=m.resamp_with_conv,
        conditional=m.conditional,
        scale_by_sigma=m.scale_by_sigma,
        nonlinearity=m.nonlinearity,
        sigma_min=s.sigma_min / unit,
        sigma_max=s.sigma_max / unit,
        num_scales=s.N,
    )
    if m.name == "ddpm":
        return DDPM(**common, attn_every_block=m.attn_every_block)
    return NCSNpp(
        **common,
        fir=m.fir,
        fir_kernel=tuple(m.fir_kernel),
        skip_rescale=m.skip_rescale,
        resblock_type=m.resblock_type,
        progressive=m.progressive,
        progressive_input=m.progressive_input,
        progressive_combine=m.progressive_combine,
        embedding_type=m.embedding_type,
        fourier_scale=m.fourier_scale,
        init_scale=m.init_scale,
    )


def make_score_model(cfg, sde: SDE | None = None) -> ScoreModel:
    """ScoreModel(net, sde) as the config describes (on CPU; the driver moves it)."""
    m = cfg.model
    return ScoreModel(
        make_net(cfg),
        sde or make_sde_from_config(cfg),
        precision=m.precision,
        parameterization=m.parameterization,
        sigma_data=m.sigma_data,
    )


def make_train_data(cfg):
    """The training data: an object with batch(batch_size, generator) -> (x in model space, y or None)."""
    d = cfg.data
    if d.dataset == "gmm":
        return make_mixture("gmm2d", d.dim)
    if d.dataset == "mnist":
        return make_dataset(
            "mnist",
            source=d.source,
            root=d.root,
            split="train",
            dequantize=d.dequantize,
            seed=cfg.seed,
            base_url=mirror_list(d.mirrors),
        )
    if d.dataset == "cifar10":
        return make_dataset(
            "cifar10",
            root=d.root,
            split="train",
            dequantize=d.dequantize,
            seed=cfg.seed,
            image_size=d.image_size,
            random_flip=d.random_flip,
            download=d.source == "download",
        )
    return make_dataset(d.dataset)


def load_eval_images(cfg, split: str, root: str | None = None, progress: bool = True):
    """(uint8 images [N, C, H, W] of the image data set cfg.data.dataset's `split`, description), at the config's
    image size; `root` defaults to data.root."""
    d = cfg.data
    root = root or d.root
    if d.dataset == "cifar10":
        images, _, description = load_cifar10(root, split, download=d.source == "download", progress=progress)
        if images.shape[-1] != d.image_size:
            images = resize_pixels(images, d.image_size)
        return torch.from_numpy(images), description
    if d.dataset != "mnist":
        raise ValueError(f"data.dataset = {d.dataset!r} is not an image data set; valid: {list(IMAGE_DATASETS)}")
    images, _, description = load_mnist(d.source, root, split, progress=progress)
    return torch.from_numpy(np.asarray(images))[:, None], description


def classifier_arch(cfg, num_classes: int) -> dict:
    """Constructor arguments (plain data, stored in the checkpoint) of the classifier that fits cfg's data."""
    c = cfg.classifier
    if cfg.model.name == "mlp":
        return {
            "name": "NoisyMLPClassifier",
            "dim": cfg.data.dim,
            "num_classes": num_classes,
            "hidden": c.hidden,
            "depth": c.depth,
        }
    return {
        "name": "NoisyClassifier",
        "in_channels": cfg.data.num_channels,
        "image_size": cfg.data.image_size,
        "num_classes": num_classes,
        "base_channels": c.base_channels,
    }


def build_classifier(arch: dict) -> nn.Module:
    """The network an `arch` dict describes."""
    classes = {"NoisyClassifier": NoisyClassifier, "NoisyMLPClassifier": NoisyMLPClassifier}
    kwargs = dict(arch)
    name = kwargs.pop("name")
    if name not in classes:
        raise ValueError(f"unknown classifier {name!r}; valid: {sorted(classes)}")
    return classes[name](**kwargs)


def data_num_classes(data) -> int:
    """Number of classes of a labelled training set (GaussianMixture or ImageData)."""
    if getattr(data, "num_classes", None):
        return int(data.num_classes)
    labels = getattr(data, "labels", None)
    if labels is None:
        raise ValueError(
            f"classifier training needs labelled data (MNIST or the 'gmm' mixture); {type(data).__name__} has no labels"
        )
    return int(labels.max()) + 1
