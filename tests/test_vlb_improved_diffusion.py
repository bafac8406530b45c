"""The discrete bound against improved-diffusion's own (Ho et al.'s diffusion_utils_2 ported to PyTorch), through
numbers its code wrote (tests/fixtures/make_improved_diffusion_vlb.py, peer commit 1bc7bbb): its prior term and
every term of its `_vb_terms_bpd` (KL terms and the discretised decoder) on its linear and cosine schedules with
N = 50 steps, fixed-small and fixed-large variances, with and without clipping x0, for the exact noise predictor of
Gaussian data and the same latents. Ours: `vlb_terms` on the chain read as a path (`DiscreteChain` of its betas),
the full grid t = k / N, variance "posterior" / "forward", decoder="ddpm" (its data map, bins, CDF approximation and
decoder std), clip_x0."""

import math
from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from likelihood.vlb import bound_grid, vlb_terms
from sde.discrete import DiscreteChain

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "improved_diffusion_vlb.pt", weights_only=True)
X0 = FIXTURE["pixels"].float() / 127.5 - 1
DIMS = X0[0].numel()
DATA = GaussianMixture(torch.ones(1), torch.full((1, DIMS), FIXTURE["mean"]), torch.tensor([FIXTURE["std"]]),
                       shape=X0.shape[1:])  # fmt: skip
VARIANCES = {"FIXED_SMALL": "posterior", "FIXED_LARGE": "forward"}


def ours(case: dict, decoder: str = "ddpm") -> dict:
    chain = DiscreteChain(case["betas"])
    grid = bound_grid(chain, FIXTURE["n"])
    score = DATA.score_fn(chain)
    return vlb_terms(lambda x, t: score(x.double(), t.double()).float(), chain, X0, grid,
                     variance=VARIANCES[case["var"]], decoder=decoder, clip_x0=case["clip"],
                     generator=torch.Generator().manual_seed(FIXTURE["seed"]))  # fmt: skip


@pytest.mark.parametrize(
    "case", FIXTURE["cases"], ids=lambda c: f"{c['schedule']}-{c['var'].lower()}-{'clip' if c['clip'] else 'noclip'}"
)
def test_bound_equals_improved_diffusions_terms(case):
    """Every term, per image, in bits/dim: equal to float32 rounding (its coefficients are float32)."""
    terms = ours(case)
    bits = 1 / (DIMS * math.log(2))
    torch.testing.assert_close(terms["prior"] * bits, case["prior"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["decoder"] * bits, case["vb"][:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["diffusion"] * bits, case["vb"][:, 1:], rtol=1e-4, atol=1e-5)
    total = (terms["total"] * bits).double()
    torch.testing.assert_close(total, (case["vb"].sum(1) + case["prior"]).double(), rtol=1e-5, atol=1e-4)


def test_our_own_decoder_is_not_hos():
    """Our default decoder (bins of width 2/256 at the centres (2k + 1)/256 - 1, std sigma_t1 / alpha_t1, the exact
    CDF) is another L_0: it refuses Ho's data map, and on its own map gives another value."""
    case = FIXTURE["cases"][0]
    with pytest.raises(ValueError, match="pixel-bin centres"):
        ours(case, decoder="discretized")
    with pytest.raises(ValueError, match=r"k / 127.5 - 1"):
        chain = DiscreteChain(case["betas"])
        vlb_terms(DATA.score_fn(chain), chain, (2 * FIXTURE["pixels"].double() + 1) / 256 - 1,
                  bound_grid(chain, FIXTURE["n"]), decoder="ddpm")  # fmt: skip


def test_driver_option_uses_hos_data_map():
    """evaluate_bpd(bound_decoder="ddpm") feeds the pixels as k / 127.5 - 1 (its prior term, which draws nothing,
    equals improved-diffusion's) and clips when bound_clip; the default feeds the bin centres (another prior)."""
    from evaluation.likelihood_eval import evaluate_bpd

    case = FIXTURE["cases"][0]
    chain = DiscreteChain(case["betas"])
    score = DATA.score_fn(chain)

    def score_fn(x, t):
        return score(x.double(), t.double()).float()

    images = FIXTURE["pixels"].to(torch.uint8)
    common = {"bound_steps": FIXTURE["n"], "num_probes": 1, "rtol": 1e-2, "atol": 1e-2, "batch_size": 8}
    hos = evaluate_bpd(score_fn, chain, images, bound_decoder="ddpm", bound_clip=True, **common)
    ours_default = evaluate_bpd(score_fn, chain, images, **common)
    torch.testing.assert_close(torch.from_numpy(hos["per_image"]["bound_prior"]).float(), case["prior"])
    # The prior term is tiny here (1.7e-6 bits/dim); the two maps move it by 0.8 %.
    assert abs(ours_default["bound_bpd_prior"] - hos["bound_bpd_prior"]) > 1e-3 * hos["bound_bpd_prior"]
    assert 0 < hos["bound_bpd_decoder"] < 10 and math.isfinite(hos["bound_bpd_total"])


@pytest.mark.parametrize("key", sorted(FIXTURE["schedules"]))
def test_chains_have_improved_diffusions_betas(key):
    """DDPM's linear chain (betas 0.1 / N to 20 / N: Ho et al.'s 1e-4..0.02 scaled by 1000 / N, as improved-diffusion
    extends them) and iDDPM's cosine chain (Nichol & Dhariwal 2021, Eq. 17, betas clipped at 0.999) equal its
    get_named_beta_schedule."""
    from sde import make_sde

    name, n = key.rsplit("_", 1)
    n = int(n)
    sde = make_sde("ddpm" if name == "linear" else "cosine", N=n)  # ddpm: beta(t) / N from 0.1 to 20
    torch.testing.assert_close(sde.betas, FIXTURE["schedules"][key], rtol=1e-12, atol=1e-15)
