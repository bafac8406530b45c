"""Sample quality for digits: FID and KID on the MNIST evaluation network's features, accuracy and class histogram.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to two feature sets,
    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2}),
computed from the eigenvalues of the symmetric C_a^{1/2} C_b C_a^{1/2} (same trace as sqrtm(C_a C_b), no complex
round-off). KID (Binkowski et al. 2018) is the unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3, averaged
over random subsets; it is unbiased at any sample size, so small sample sets compare honestly.
Features come from `MNISTFeatureNet` trained on real digits (training/evalnet.py), not from Inception, so the
numbers are comparable only with other numbers from the same evaluation network (its checkpoint is reported).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from compose.checkpoints import load_evalnet, load_score_model
from compose.features import evalnet_outputs, pixels_to_evalnet_input, real_reference
from compose.sampling import label_classes, model_shape, sample_batch, with_default_steps
from data.mnist import load_mnist

logger = logging.getLogger(__name__)


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and unbiased covariance [F, F] of features [N, F], in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, F], got shape {feats.shape}")
    return feats.mean(0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    lam, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(lam, 0, None))) @ v.T


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b) (Dowson & Landau 1982; FID, Heusel et al. 2017)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(f"mismatched statistics: means {mu_a.shape}, {mu_b.shape}; covs {cov_a.shape}, {cov_b.shape}")
    root_a = _psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # eigenvalues of C_a^{1/2} C_b C_a^{1/2} = those of C_a C_b
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def frechet_distance(feats_a, feats_b) -> float:
    """FID of two feature sets [N_a, F], [N_b, F] (Heusel et al. 2017)."""
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def polynomial_mmd2_unbiased(a: np.ndarray, b: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^degree (Binkowski et al. 2018, Eq. 2 with their kernel)."""
    m, n, d = a.shape[0], b.shape[0], a.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    k_aa, k_bb, k_ab = ((p @ q.T / d + 1) ** degree for p, q in ((a, a), (b, b), (a, b)))
    sum_aa = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))  # off-diagonal terms only: that removes the bias
    sum_bb = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(sum_aa + sum_bb - 2 * k_ab.mean())


def kernel_inception_distance(
    feats_a, feats_b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and std over random subsets of the unbiased polynomial-kernel MMD^2 (Binkowski et al. 2018)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need feature sets [N, F] of the same width, got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2_unbiased(
            a[rng.choice(a.shape[0], m, replace=False)], b[rng.choice(b.shape[0], m, replace=False)]
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def class_histogram(preds, num_classes: int = 10) -> np.ndarray:
    """Fraction of samples assigned to each class [num_classes] (sums to 1)."""
    counts = np.bincount(np.asarray(preds, np.int64).ravel(), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def histogram_summary(hist: np.ndarray) -> dict:
    """Mode coverage of a class histogram: KL(hist || uniform) in nats, min and max class fraction."""
    k = hist.size
    nz = hist[hist > 0]
    return {
        "kl_to_uniform": float((nz * np.log(nz * k)).sum()),
        "min_fraction": float(hist.min()),
        "max_fraction": float(hist.max()),
    }


def conditional_accuracy(preds, labels) -> float:
    """Fraction of conditional samples that the evaluation network classifies as the requested class."""
    preds, labels = np.asarray(preds).ravel(), np.asarray(labels).ravel()
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.size} predictions for {labels.size} labels")
    return float((preds == labels).mean())


def sample_metrics(
    sample_feats,
    real_feats,
    sample_preds,
    labels=None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """FID, KID (mean, std), class histogram, and (for conditional samples) accuracy, as a JSON-ready dict."""
    kid, kid_std = kernel_inception_distance(sample_feats, real_feats, kid_subsets, kid_subset_size, seed)
    hist = class_histogram(sample_preds)
    out = {
        "num_samples": int(len(sample_feats)),
        "num_real": int(len(real_feats)),
        "fid": frechet_distance(sample_feats, real_feats),
        "kid": kid,
        "kid_std": kid_std,
        "class_histogram": hist.round(4).tolist(),
        **histogram_summary(hist),
    }
    if labels is not None:
        out["accuracy"] = conditional_accuracy(sample_preds, labels)
    return out


# ---- Driver: samples of a checkpoint under the evaluation network. -------------------------------------------------
def draw_samples(model, sampling: dict, num: int, labels: torch.Tensor | None, seed: int, device) -> tuple:
    """num samples in batches of sampling.batch_size with the given labels [num] (or None) through the sampling
    driver's score function (so guidance applies exactly as in --mode sample); returns (x [num, ...], NFE/batch)."""

    shape, bs = model_shape(model), sampling["batch_size"]
    xs, nfe = [], []
    for b, offset in enumerate(range(0, num, bs)):
        n = min(bs, num - offset)
        generator = torch.Generator(device).manual_seed(seed * 1_000_003 + b)
        batch_labels = None if labels is None else labels[offset : offset + n].to(device)
        x, calls = sample_batch(model, model.sde, sampling, n, shape, generator, device, batch_labels)
        xs.append(x.cpu())
        nfe.append(calls)
    return torch.cat(xs), float(np.mean(nfe))


def quality_of(net, x: torch.Tensor, reference: dict, labels: torch.Tensor | None, e) -> dict:
    """sample_metrics of model-space samples x against the real reference features (cfg.eval section `e`)."""

    feats, preds = evalnet_outputs(net, x)
    return sample_metrics(
        feats, reference["feats"], preds, None if labels is None else labels.numpy(), e.kid_subsets, e.kid_subset_size
    )


def real_baseline(cfg, net, reference: dict, num: int) -> dict:
    """FID/KID of `num` real TRAINING digits (random, seeded) against the test reference: the floor that samples
    of the same count can reach, since both metrics depend on the sample size."""

    images, labels, desc = load_mnist(cfg.data.source, cfg.data.root, "train", progress=False)
    pick = np.random.default_rng(cfg.seed).choice(len(images), min(num, len(images)), replace=False)
    feats, preds = evalnet_outputs(net, pixels_to_evalnet_input(images[pick]), quantize=False)
    out = sample_metrics(feats, reference["feats"], preds, labels[pick], cfg.eval.kid_subsets, cfg.eval.kid_subset_size)
    return {**out, "description": desc}


def run_quality_eval(cfg, workdir: str) -> dict:
    """FID/KID and class histogram of unconditional samples and, for conditional models (or classifier
    guidance), of class-cycling guided samples with their accuracy, under the MNIST evaluation network."""

    device, e = torch.device(cfg.device), cfg.eval
    net, net_info = load_evalnet(e.evalnet_workdir, device)
    reference = real_reference(cfg, net)
    model, _ = load_score_model(cfg.sampling.checkpoint or workdir, device, cfg.sampling.use_ema)
    sampling = with_default_steps(cfg.sampling.to_dict())
    results = {
        "evalnet": {"checkpoint": net_info["checkpoint"], "accuracy_on_reference": reference["accuracy"]},
        "reference": reference["description"],
        "sampler": sampling["sampler"],
        "steps": sampling["steps"],
        "real_train_digits": real_baseline(cfg, net, reference, e.num_samples),
    }
    # Unconditional samples.
    x, nfe = draw_samples(
        model, {**sampling, "label": -1, "classifier_scale": 0.0}, e.num_samples, None, cfg.seed, device
    )
    results["unconditional"] = {**quality_of(net, x, reference, None, e), "nfe": nfe}
    # Class-conditional samples, classes cycling 0..C-1, with the configured guidance.
    num_classes = label_classes(model, sampling)  # the model's, or the guiding classifier's
    if num_classes:
        labels = torch.arange(e.num_samples) % num_classes
        x, nfe = draw_samples(model, sampling, e.num_samples, labels, cfg.seed + 1, device)
        results["conditional"] = {
            **quality_of(net, x, reference, labels, e),
            "nfe": nfe,
            "guidance_scale": sampling["guidance_scale"],
            "classifier_scale": sampling["classifier_scale"],
        }
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sample_quality.json"), "w") as f:
        json.dump(results, f, indent=2)
    logger.info("sample quality: %s", json.dumps({k: v for k, v in results.items() if k != "real_train_digits"}))
    return results
