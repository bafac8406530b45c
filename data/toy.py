"""Gaussian-mixture data with exact scores and log-densities under every linear SDE: the test oracle.

If x_0 ~ sum_k w_k N(mu_k, C_k), then under an SDE with marginal p_t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)
the perturbed density is p_t(x) = sum_k w_k N(x; alpha_t mu_k, alpha_t^2 C_k + sigma_t^2 I), so its score,
log-density, class posterior p(c | x_t) and the ideal noise predictor eps*(x, t) = -sigma_t s(x, t) are exact.
Events may be vectors [d] or images [C, H, W]; covariances are full, so correlated targets are covered.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sde import SDE, as_time


class GaussianMixture:
    """A mixture of full-covariance Gaussians, optionally labelled, with exact perturbed scores (Song et al. 2021)."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor, labels: Tensor | None = None, shape=None):
        """weights [K] (normalised here), means [K, D], covs [K, D, D] or stds [K] (isotropic); labels [K] ints."""
        weights, means = torch.as_tensor(weights, dtype=torch.float64), torch.as_tensor(means, dtype=torch.float64)
        k, d = means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.ndim == 1:
            covs = covs[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        if weights.shape != (k,) or covs.shape != (k, d, d) or (weights <= 0).any():
            raise ValueError(
                f"need positive weights [K], means [K, D], covs [K, D, D]; got {weights.shape}, "
                f"{means.shape}, {covs.shape}"
            )
        self.weights, self.means, self.covs = weights / weights.sum(), means, covs
        self.labels = torch.arange(k) if labels is None else torch.as_tensor(labels).long()
        self.num_classes = int(self.labels.max()) + 1
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"event shape {self.shape} does not hold {d} dimensions")
        self.dim = d
        # Isotropic components (S_k = v_k I) take a closed-form inverse: exact d = 784 oracles stay cheap.
        eye = torch.eye(d, dtype=torch.float64)
        v = torch.diagonal(covs, dim1=-2, dim2=-1).mean(-1)
        self._iso_var = v if bool((covs == v[:, None, None] * eye).all()) else None

    # ---- Data. ---------------------------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        y: int | Tensor | None = None,
        return_labels: bool = False,
        dtype=torch.float32,
    ):
        """Draw n points [n, *shape] from p_0 (or from p_0(x | c = y)), optionally with their class labels."""
        weights = self._class_weights(y)
        comp = torch.multinomial(weights.float(), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)  # [K, D, D]
        x = self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], noise) if self._iso_var is None else None
        if x is None:  # isotropic: the same draws, without an [n, D, D] gather
            x = self.means[comp] + self._iso_var.sqrt()[comp, None] * noise
        x = x.to(dtype).reshape(n, *self.shape)
        return (x, self.labels[comp]) if return_labels else x

    def batch(self, batch_size: int, generator: torch.Generator | None = None):
        """A training batch (x, y) with the same interface as the image data sets."""
        x, y = self.sample(batch_size, generator, return_labels=True)
        return x, y

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return self.shape

    def state_dict(self) -> dict:
        """Fresh draws every batch: no position to save."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (see state_dict)."""

    # ---- Perturbed densities. ------------------------------------------------------------------------------------
    def _class_weights(self, y) -> Tensor:
        if y is None:
            return self.weights
        y = int(y)
        if not 0 <= y < self.num_classes:
            raise ValueError(f"label {y} out of range [0, {self.num_classes})")
        return torch.where(self.labels == y, self.weights, torch.zeros_like(self.weights))

    def _component_log_probs(self, x: Tensor, t, sde: SDE | None) -> tuple[Tensor, Tensor]:
        """log w_k N(x; m_k, S_k) [B, K] and the per-component scores [B, K, D], in float64."""
        xf = x.reshape(x.shape[0], -1).double()
        if sde is None:
            alpha = torch.ones(x.shape[0], dtype=torch.float64)
            sigma = torch.zeros_like(alpha)
        else:
            alpha, sigma = sde.marginal(as_time(t, x).double().cpu())
        if self._iso_var is not None:  # C_bk = (alpha_b^2 v_k + sigma_b^2) I
            var = alpha[:, None] ** 2 * self._iso_var + sigma[:, None] ** 2  # [B, K]
            diff = xf.cpu()[:, None, :] - alpha[:, None, None] * self.means
            sol = diff / var[..., None]
            logp = -0.5 * ((diff * sol).sum(-1) + self.dim * torch.log(2 * math.pi * var))
            return logp + torch.log(self.weights), -sol
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov = alpha[:, None, None, None] ** 2 * self.covs + sigma[:, None, None, None] ** 2 * eye  # [B, K, D, D]
        chol = torch.linalg.cholesky(cov)
        diff = xf.cpu()[:, None, :] - alpha[:, None, None] * self.means  # [B, K, D]
        sol = torch.cholesky_solve(diff[..., None], chol)[..., 0]  # S^{-1} (x - m), [B, K, D]
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logp = -0.5 * ((diff * sol).sum(-1) + logdet + self.dim * math.log(2 * math.pi))
        return logp + torch.log(self.weights), -sol

    def log_prob(self, x: Tensor, t=None, sde: SDE | None = None, y=None) -> Tensor:
        """Exact log p_t(x) in nats [B] (p_0 when sde is None), or log p_t(x | c = y)."""
        logp, _ = self._component_log_probs(x, t, sde)
        logp = self._restrict(logp, y)
        return torch.logsumexp(logp, -1).to(x.device, x.dtype if x.is_floating_point() else torch.float64)

    def score(self, x: Tensor, t, sde: SDE, y=None) -> Tensor:
        """Exact score grad_x log p_t(x) (or of p_t(x | c = y)) [B, *D]."""
        t = as_time(t, x)
        if bool((t == t[0]).all()):  # samplers share one time per batch: K matrix inverses instead of B * K
            return self._shared_time_score(x, t[:1], sde, y)
        logp, comp_scores = self._component_log_probs(x, t, sde)
        resp = torch.softmax(self._restrict(logp, y), -1)  # [B, K]
        return (resp[..., None] * comp_scores).sum(1).reshape(x.shape).to(x.device, x.dtype)

    def _shared_time_score(self, x: Tensor, t: Tensor, sde: SDE, y) -> Tensor:
        """The score when every example has the same time t [1] (same value as the general path)."""
        alpha, sigma = sde.marginal(t.double().cpu())
        diff = x.reshape(x.shape[0], -1).double().cpu()[:, None, :] - alpha * self.means  # [B, K, D]
        if self._iso_var is not None:
            var = alpha**2 * self._iso_var + sigma**2  # [K]
            sol = diff / var[:, None]
            logp = -0.5 * (diff * sol).sum(-1) - 0.5 * self.dim * torch.log(var) + torch.log(self.weights)
        else:
            prec = torch.linalg.inv(alpha**2 * self.covs + sigma**2 * torch.eye(self.dim, dtype=torch.float64))
            sol = torch.einsum("kij,bkj->bki", prec, diff)  # S_k^{-1} (x - m_k)
            logp = -0.5 * (diff * sol).sum(-1) + 0.5 * torch.logdet(prec) + torch.log(self.weights)
        resp = torch.softmax(self._restrict(logp, y), -1)  # [B, K]
        return (-(resp[..., None] * sol).sum(1)).reshape(x.shape).to(x.device, x.dtype)

    def flow_map(self, x: Tensor, t: float, s: float, sde: SDE) -> Tensor:
        """The exact probability-flow map x_t -> x_s for one-component (Gaussian) data N(m, S).

        The flow keeps p_u = N(alpha_u m, C_u), C_u = alpha_u^2 S + sigma_u^2 I, and its velocity is linear in x and
        commutes with S, so x_s = alpha_s m + C_s^{1/2} C_t^{-1/2} (x_t - alpha_t m) (no solver involved).
        """
        if len(self.weights) != 1:
            raise ValueError("the exact flow map is closed-form only for one Gaussian component")
        evals, evecs = torch.linalg.eigh(self.covs[0])
        (a_t, a_s), (s_t, s_s) = sde.marginal(torch.tensor([float(t), float(s)], dtype=torch.float64))
        scale = ((a_s**2 * evals + s_s**2) / (a_t**2 * evals + s_t**2)).sqrt()
        m = self.means[0]
        diff = x.reshape(x.shape[0], -1).double().cpu() - a_t * m
        out = a_s * m + ((diff @ evecs) * scale) @ evecs.T
        return out.reshape(x.shape).to(x.device, x.dtype)

    def class_log_posterior(self, x: Tensor, t, sde: SDE) -> Tensor:
        """Exact log p_t(c | x) [B, num_classes], the ideal noisy classifier."""
        logp, _ = self._component_log_probs(x, t, sde)
        joint = torch.stack([torch.logsumexp(self._restrict(logp, c), -1) for c in range(self.num_classes)], -1)
        return (joint - torch.logsumexp(joint, -1, keepdim=True)).to(x.device, x.dtype)

    def _restrict(self, logp: Tensor, y) -> Tensor:
        if y is None:
            return logp
        y = torch.as_tensor(y).reshape(-1)
        mask = self.labels[None, :] == y[:, None].cpu()  # [B or 1, K]
        return logp.masked_fill(~mask, -math.inf)

    def score_fn(self, sde: SDE, y=None):
        """The exact score as a samplers' `score_fn(x, t)`."""
        return lambda x, t: self.score(x, t, sde, y)

    def eps_net(self, sde: SDE) -> nn.Module:
        """The ideal noise predictor eps*(x_t, t) = -sigma_t s(x_t, t) as a network for `ScoreModel`."""
        return _OracleEpsNet(self, sde)


class _OracleEpsNet(nn.Module):
    """Network-interface wrapper of the exact eps*: recovers t from the noise label (`sde.t_from_logsnr`)."""

    def __init__(self, mixture: GaussianMixture, sde: SDE):
        super().__init__()
        self.mixture, self.sde = mixture, sde
        self.num_classes = 0

    def _time(self, noise_label: Tensor) -> Tensor:
        return self.sde.t_from_logsnr(-noise_label.double())  # the "eps" noise label is -lambda_t

    def forward(self, x_in: Tensor, noise_label: Tensor) -> Tensor:
        t = self._time(noise_label)
        alpha, sigma = self.sde.marginal(t)
        x = x_in.double() * torch.sqrt(alpha**2 + sigma**2).reshape(-1, *([1] * (x_in.ndim - 1)))
        score = self.mixture.score(x, t, self.sde)
        return (-sigma.reshape(-1, *([1] * (x_in.ndim - 1))) * score).to(x_in.dtype)


def make_mixture(name: str = "gmm2d", dim: int = 2, seed: int = 0) -> GaussianMixture:
    """Standard oracle mixtures: 'gmm2d' (4 labelled modes in 2-D), 'gaussian' (one correlated Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    if name == "gmm2d":
        means = torch.tensor([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5], [1.5, 1.5]], dtype=torch.float64)
        if dim != 2:
            means = torch.randn(4, dim, generator=g, dtype=torch.float64)
        return GaussianMixture(torch.tensor([0.2, 0.3, 0.35, 0.15]), means, torch.tensor([0.3, 0.4, 0.25, 0.35]))
    if name == "gaussian":
        a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
        cov = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
        return GaussianMixture(torch.ones(1), 0.3 * torch.randn(1, dim, generator=g, dtype=torch.float64), cov[None])
    raise ValueError(f"unknown mixture {name!r}; valid: ['gmm2d', 'gaussian']")
