"""FID and KID against closed forms and unbiasedness; histogram and accuracy helpers."""

import numpy as np
import pytest
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
    """Plug-in FID from n = 40,000 draws per set: its bias and spread are O(d / n) and O(1/sqrt(n)); 3 % is > 5 s.d.
    (checked over seeds), and the closed form (about 3.2) is far from 0."""
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
    out = sample_metrics(rng.normal(size=(50, 3)), rng.normal(size=(60, 3)), rng.integers(0, 10, 50),
                         labels=rng.integers(0, 10, 50), kid_subsets=3, kid_subset_size=20)
    assert {"fid", "kid", "kid_std", "accuracy", "class_histogram", "kl_to_uniform"} <= set(out)
    assert len(out["class_histogram"]) == 10
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
