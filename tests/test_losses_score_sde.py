"""The training losses against score_sde_pytorch's own, through values its code computed
(tests/fixtures/make_score_sde_runs.py, peer commit cb1f359): `get_sde_loss_fn` on its VP, sub-VP and VE SDEs with
and without likelihood weighting and reduce_mean, `get_ddpm_loss_fn` (DDPM's L_simple on its 1000-step chain) and
`get_smld_loss_fn` (NCSN's objective on a 10-level ladder), for the exact score of N(m, 0.5^2 I) data, from the same
seed (its t or label first, then its noise). Ours (`losses.loss_fn`, per example, averaged over dimensions) equals
its value after its reduction: the batch mean with reduce_mean, D / 2 times it without (its sum carries a 1/2)."""

from pathlib import Path

import pytest
import torch

from losses.dsm import loss_fn
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "score_sde_losses.pt", weights_only=True)
MEAN = FIXTURE["mean"].double()
D = FIXTURE["batch"][0].numel()
PATHS = {
    "vp": ("vp", {"beta_min": 0.1, "beta_max": 20.0}),
    "subvp": ("subvp", {"beta_min": 0.1, "beta_max": 20.0}),
    "ve": ("ve", {"sigma_min": 0.01, "sigma_max": 50.0}),
}


class ExactEps:
    """The ideal noise predictor of N(MEAN, std^2 I) data on `sde`: eps = sigma (x - alpha m) / (alpha^2 s^2 +
    sigma^2), in the interface the losses call (model.eps(x_t, t, y))."""

    def __init__(self, sde):
        self.sde = sde

    def eps(self, x, t, y=None):
        alpha, sigma = (v.double()[:, None, None, None] for v in self.sde.marginal(t.double()))
        eps = sigma * (x.double() - alpha * MEAN) / (alpha**2 * FIXTURE["std"] ** 2 + sigma**2)
        return eps.to(x.dtype)


def case_id(c: dict) -> str:
    return f"{c['kind']}-{c['path']}-{'mean' if c['reduce_mean'] else 'sum'}{'-likelihood' if c['likelihood'] else ''}"


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=case_id)
def test_loss_equals_score_sdes(case):
    if case["kind"] == "sde":
        name, kwargs = PATHS[case["path"]]
        sde, how, scales = make_sde(name, **kwargs), "continuous", 1000
    elif case["kind"] == "ddpm":
        sde, how, scales = make_sde("ddpm", N=case["n"]), "ddpm", case["n"]
    else:
        sde, how, scales = make_sde("ve", sigma_min=0.01, sigma_max=50.0), "smld", case["n"]
    per_example = loss_fn(ExactEps(sde), sde, FIXTURE["batch"], how=how, num_scales=scales, t_min=1e-5,
                          weighting="likelihood" if case["likelihood"] else "sigma2",
                          generator=torch.Generator().manual_seed(FIXTURE["seed"]))  # fmt: skip
    ours = per_example.mean() * (1 if case["reduce_mean"] else D / 2)
    torch.testing.assert_close(ours, case["loss"], rtol=2e-5, atol=1e-7)
