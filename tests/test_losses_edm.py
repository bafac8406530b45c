"""EDM's training objective against EDM's own `EDMLoss`, through values its code computed
(tests/fixtures/make_edm_loss.py, NVlabs/edm commit 008a4e5): P_mean = -1.2, P_std = 1.2, sigma_data = 0.5, the exact
denoiser of N(m, 0.5^2 I) data, 32 points, the same seed (its log-normal level, then its noise). Ours, `loss_fn` with
how="lognormal" and weighting="edm" on EDM's path (t = sigma), is its per-element loss averaged over each example's
dimensions (its training loop sums the elements)."""

from pathlib import Path

import torch

from losses.dsm import loss_fn
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "edm_loss.pt", weights_only=True)


class ExactEps:
    """The ideal noise predictor of N(m, s^2 I) data on EDM's path: eps = sigma (x - m) / (s^2 + sigma^2)."""

    sigma_data = 0.5

    def eps(self, x, t, y=None):
        sigma = t.double()[:, None, None, None]
        return (sigma * (x.double() - FIXTURE["mean"]) / (FIXTURE["std"] ** 2 + sigma**2)).to(x.dtype)


def test_edm_loss_equals_edms_code():
    sde = make_sde("edm")
    ours = loss_fn(ExactEps(), sde, FIXTURE["images"], how="lognormal", weighting="edm", t_min=1e-5,
                   generator=torch.Generator().manual_seed(FIXTURE["seed"]))  # fmt: skip
    theirs = FIXTURE["loss"].flatten(1).mean(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
