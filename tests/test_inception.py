"""Inception-feature FID / KID / IS plumbing (evaluation/inception.py).

torch-fidelity imports torchvision at top level, and PyPI's torchvision does not import beside the CPU torch build
this project's CI installs, so here the library's `calculate_metrics` is replaced by a stand-in that computes the
Frechet distance of per-channel means from what it is handed: that checks what we pass (uint8 RGB images, the
weights file, the metrics asked for, the KID subset size capped by the sample count) and what we read back. Where
torch-fidelity does import, the last test runs the real library with a small feature extractor registered through
its own `register_feature_extractor`, so no Inception weights are needed."""

import sys
import types

import pytest
import torch

from evaluation.inception import KEYS, RGBImages, check_weights, inception_metrics
from evaluation.quality import frechet_distance


def stand_in(calls: list):
    """A torch_fidelity module whose calculate_metrics records its arguments and returns metrics of the items."""

    def calculate_metrics(**kwargs):
        calls.append(kwargs)
        means = []
        for dataset in (kwargs["input1"], kwargs["input2"]):
            items = torch.stack([dataset[i] for i in range(len(dataset))])
            assert items.dtype == torch.uint8 and items.shape[1] == 3
            means.append(items.float().mean(dim=(2, 3)).numpy())
        fid = frechet_distance(*means)
        return {theirs: fid if "frechet" in theirs else 1.0 for theirs in KEYS}

    return types.SimpleNamespace(calculate_metrics=calculate_metrics)


def test_metrics_are_asked_of_torch_fidelity_with_uint8_rgb_and_the_weights(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "torch_fidelity", stand_in(calls))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    gray = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    rgb = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8)
    out = inception_metrics(gray, rgb, weights, kid_subset_size=1000)
    (call,) = calls
    assert call["fid"] and call["kid"] and call["isc"] and call["feature_extractor"] == "inception-v3-compat"
    assert call["feature_extractor_weights_path"] == str(weights) and call["cache"] is False
    assert call["kid_subset_size"] == 6 and call["cuda"] is False
    assert set(out) >= {"fid", "kid_mean", "kid_std", "is_mean", "is_std"} and out["num_samples"] == 6
    assert torch.equal(RGBImages(gray)[2], gray[2].expand(3, -1, -1))  # grayscale repeated into RGB
    same = inception_metrics(rgb, rgb, weights)["fid"]
    assert out["fid"] > same  # different image sets are further apart than a set from itself


def test_missing_weights_and_bad_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05-6726825d.pth"):
        check_weights(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="expected uint8 images"):
        RGBImages(torch.zeros(2, 3, 4, 4))


def test_eval_refuses_inception_metrics_without_weights_or_samples(tmp_path):
    from compose.validate import ConfigError, validate_config
    from configs.toy_gmm import get_config
    from training.loop import train

    cfg = get_config()
    cfg.training.n_iters, cfg.training.snapshot_every, cfg.training.checkpoint_every = 1, 0, 1
    train(cfg, tmp_path / "w")
    cfg.eval.inception_metrics, cfg.eval.inception_weights = True, str(tmp_path / "nope.pth")
    with pytest.raises(
        ConfigError, match=r"eval.inception_weights = .* is not a file(.|\n)*has none: run --mode sample"
    ):
        validate_config(cfg, "eval", str(tmp_path / "w"))


def torch_fidelity_or_skip():
    try:
        import torch_fidelity
    except Exception as err:  # noqa: BLE001 - not installed, or its torchvision fails to load beside this torch
        pytest.skip(f"torch-fidelity does not import here ({type(err).__name__}): see the module docstring")
    return torch_fidelity


def test_the_real_library_with_a_registered_feature_extractor():
    torch_fidelity = torch_fidelity_or_skip()

    class MeanColour(torch_fidelity.FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("colour", "logits_unbiased")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased"}.get(metric, "colour")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

        def forward(self, x):
            colour = x.float().mean(dim=(2, 3)) / 255
            return colour, torch.cat([colour, 1 - colour], dim=1)

    if "scoresde-mean-colour" not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("scoresde-mean-colour", MeanColour)
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 128, (40, 3, 8, 8), dtype=torch.uint8, generator=gen)
    b = torch.randint(128, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=gen)
    far = inception_metrics(a, b, None, feature_extractor="scoresde-mean-colour", kid_subset_size=20, isc_splits=2)
    near = inception_metrics(a, a, None, feature_extractor="scoresde-mean-colour", kid_subset_size=20, isc_splits=2)
    assert far["fid"] > 10 * max(near["fid"], 1e-6)
