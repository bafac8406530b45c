"""FID and KID against closed forms and unbiasedness; histogram and accuracy helpers."""

import json

import numpy as np
import pytest
import torch
from scipy import linalg

from evaluation.quality import (
    class_histogram,
    conditional_accuracy,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    polynomial_mmd2_unbiased,
    sample_metrics,
)


def _random_cov(rng, d):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return a @ a.T + 0.1 * np.eye(d)


def test_fid_of_identical_feature_sets_is_zero():
    feats = np.random.default_rng(0).normal(size=(500, 16)) @ _random_cov(np.random.default_rng(1), 16)
    assert abs(frechet_distance(feats, feats)) < 1e-8


def test_fid_matches_closed_forms():
    """Commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2; general: scipy's sqrtm(C_a C_b)."""
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    got = frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-10)
    cov_a, cov_b = _random_cov(rng, 6), _random_cov(rng, 6)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-8)


def test_fid_of_gaussian_samples_converges_to_closed_form():
    """Plug-in FID from n = 40,000 draws per set: bias O(d / n), relative s.d. 0.8 % (measured over 20 seeds), so
    3 % is about 4 s.d.; the closed form (about 2.07) is far from 0, so a wrong formula fails."""
    rng = np.random.default_rng(0)
    d, n = 4, 40_000
    mu_a, mu_b = np.zeros(d), np.full(d, 0.5)
    cov_a, cov_b = _random_cov(rng, d), _random_cov(rng, d)
    feats_a = rng.multivariate_normal(mu_a, cov_a, n)
    feats_b = rng.multivariate_normal(mu_b, cov_b, n)
    exact = frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b)
    assert frechet_distance(feats_a, feats_b) == pytest.approx(exact, rel=0.03)


def test_kid_is_unbiased_for_same_distribution():
    """Average over 300 independent pairs of 40-sample sets: the unbiased MMD^2 has mean 0 within 4 s.e.,
    while the biased V-statistic is positive by far more than 4 s.e. (so the test can fail)."""
    rng = np.random.default_rng(0)
    d, m, reps = 4, 40, 300
    unbiased, biased = [], []
    for _ in range(reps):
        a, b = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        unbiased.append(polynomial_mmd2_unbiased(a, b))
        k = [(p @ q.T / d + 1) ** 3 for p, q in ((a, a), (b, b), (a, b))]
        biased.append(k[0].mean() + k[1].mean() - 2 * k[2].mean())
    se = np.std(unbiased) / np.sqrt(reps)
    assert abs(np.mean(unbiased)) < 4 * se
    assert np.mean(biased) > 4 * np.std(biased) / np.sqrt(reps)


def test_kid_subsets_zero_for_same_and_positive_for_shifted():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    kid, kid_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=300)
    assert abs(kid) < 3 * kid_std and kid_std > 0
    shifted, _ = kernel_inception_distance(a, b + 0.3, num_subsets=20, subset_size=300)
    assert shifted > 5 * kid_std


def test_histogram_accuracy_and_metrics_dict():
    preds = np.array([0, 1, 1, 3, 3, 3])
    np.testing.assert_allclose(class_histogram(preds, 4), [1 / 6, 2 / 6, 0, 3 / 6])
    assert conditional_accuracy(preds, [0, 1, 2, 3, 3, 0]) == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        conditional_accuracy(preds, [0, 1])
    rng = np.random.default_rng(0)
    out = sample_metrics(
        rng.normal(size=(50, 3)),
        rng.normal(size=(60, 3)),
        rng.integers(0, 10, 50),
        labels=rng.integers(0, 10, 50),
        kid_subsets=3,
        kid_subset_size=20,
    )
    assert {"fid", "kid", "kid_std", "accuracy", "class_histogram", "kl_to_uniform"} <= set(out)
    assert len(out["class_histogram"]) == 10
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# ---- The evaluation-network trainer, end to end, on a tiny synthetic MNIST in IDX format. --------------------------
def _write_idx(path, array):
    """Write uint8 images [N, 28, 28] (magic 0x803) or labels [N] (0x801) as an IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x803 if array.ndim == 3 else 0x801
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def _fake_digits(n, seed):
    """Class k (0..9) = a bright 6x6 block in cell k of a 2x5 layout, plus pixel noise: separable, but not
    trivially (translations of up to 2 pixels move the blocks)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28))
    for i, k in enumerate(labels):
        top, left = 4 + 12 * (k // 5), 1 + 5 * (k % 5)
        images[i, top : top + 6, left : left + 5] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def test_train_evalnet_end_to_end_and_quality_eval_pieces(tmp_path):
    """train_evalnet on 200 fake digits (IDX train + test files, 25 steps: seconds): runs, learns, reports the
    test accuracy that the restored checkpoint reproduces, and the restored net's features feed FID (of the
    test digits with themselves: 0; 100 digits < 128 features makes the covariance singular, hence 1e-3)."""
    from compose.checkpoints import load_evalnet
    from compose.features import evalnet_outputs, real_reference
    from configs.default import get_default_config
    from training.evalnet import train_evalnet

    for split, (prefix, n) in {"train": ("train", 200), "test": ("t10k", 100)}.items():
        images, labels = _fake_digits(n, seed=len(split))
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    cfg = get_default_config()
    cfg.data.source, cfg.data.root, cfg.eval.data_root = "idx", str(tmp_path), str(tmp_path)
    cfg.classifier.evalnet_iters, cfg.classifier.evalnet_batch_size, cfg.classifier.log_every = 25, 32, 5
    results = train_evalnet(cfg, tmp_path / "evalnet")
    assert results["split"] == "test" and results["num_test"] == 100 and results["num_train"] == 200
    assert json.loads((tmp_path / "evalnet" / "evalnet.json").read_text())["accuracy"] == results["accuracy"]
    assert results["accuracy"] > 0.5  # chance is 0.1; these blocks are learnt in 25 steps (1.0 measured)
    net, info = load_evalnet(tmp_path / "evalnet")
    assert info["accuracy"] == results["accuracy"]
    reference = real_reference(cfg, net)
    assert reference["accuracy"] == pytest.approx(results["accuracy"])
    assert abs(frechet_distance(reference["feats"], reference["feats"])) < 1e-3
    assert 0.7 < np.sqrt((reference["feats"] ** 2).mean()) < 1.4  # features scaled to RMS 1 on the training digits
    feats, preds = evalnet_outputs(net, torch.zeros(3, 1, 28, 28))
    assert feats.shape == (3, 128) and preds.shape == (3,)


def test_run_quality_eval_end_to_end_on_a_tiny_conditional_model(tmp_path):
    """The --mode eval path on fake digits: a tiny class-conditional U-Net (2 training steps), a 5-step
    evaluation net, then run_quality_eval: unconditional and guided metrics, a real-digit baseline, a JSON file."""
    from configs.cond_mnist import get_config
    from evaluation.quality import run_quality_eval
    from training.evalnet import train_evalnet
    from training.loop import train

    for prefix, n in (("train", 120), ("t10k", 60)):
        images, labels = _fake_digits(n, seed=n)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    cfg = get_config()
    cfg.data.source, cfg.data.root, cfg.eval.data_root = "idx", str(tmp_path), str(tmp_path)
    cfg.model.base_channels, cfg.model.channel_mult, cfg.model.num_res_blocks = 8, (1, 2), 1
    cfg.model.attn_resolutions = ()
    t = cfg.training
    t.n_iters, t.batch_size, t.warmup, t.snapshot_every, t.checkpoint_every, t.log_every = 2, 8, 1, 0, 2, 1
    cfg.classifier.evalnet_iters, cfg.classifier.evalnet_batch_size = 5, 16
    cfg.sampling.sampler, cfg.sampling.steps, cfg.sampling.batch_size = "ddim", 3, 10
    cfg.eval.num_samples, cfg.eval.kid_subsets, cfg.eval.kid_subset_size = 20, 5, 10
    cfg.eval.evalnet_workdir = str(tmp_path / "evalnet")
    train(cfg, tmp_path / "model")
    train_evalnet(cfg, tmp_path / "evalnet")
    results = run_quality_eval(cfg, str(tmp_path / "model"))
    for key in ("unconditional", "conditional", "real_train_digits"):
        assert np.isfinite(results[key]["fid"]) and np.isfinite(results[key]["kid"])
    assert results["conditional"]["guidance_scale"] == 2.0 and 0 <= results["conditional"]["accuracy"] <= 1
    assert results["unconditional"]["num_samples"] == 20 and results["unconditional"]["num_real"] == 60
    assert (tmp_path / "model" / "eval" / "sample_quality.json").is_file()
