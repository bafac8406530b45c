"""score_sde_pytorch's reverse-diffusion predictor (samplers/pc.py: `score_sde_reverse_diffusion`) against numbers
written by score_sde's own sde_lib (tests/fixtures/make_score_sde_discretize.py, peer commit cb1f359): on its VP,
sub-VP and VE SDEs with 10, 100 and 1000 levels, at the times of its own PC grid, the step's mean x - f + G^2 score
and its noise scale G equal that code's, with the score of N(0, I) data under each path."""

from pathlib import Path

import pytest
import torch

from samplers.pc import score_sde_discretize
from sde import make_sde

FIXTURE = Path(__file__).parent / "fixtures" / "score_sde_discretize.pt"
PATHS = {
    "vp": ("vp", {"beta_min": 0.1, "beta_max": 20.0}),
    "subvp": ("subvp", {"beta_min": 0.1, "beta_max": 20.0}),
    "ve": ("ve", {"sigma_min": 0.01, "sigma_max": 50.0}),
}


def cases():
    data = torch.load(FIXTURE, weights_only=True)
    return [(data["x"], case) for case in data["cases"]]


@pytest.mark.parametrize(
    "x,case", cases(), ids=lambda v: "" if isinstance(v, torch.Tensor) else f"{v['kind']}-{v['n']}"
)
def test_the_step_equals_score_sdes(x, case):
    name, kwargs = PATHS[case["kind"]]
    sde = make_sde(name, **kwargs)
    t = case["t"]
    alpha, sigma = sde.marginal(t)
    score = -x / (alpha**2 + sigma**2)[:, None, None, None]
    f, big_g = score_sde_discretize(sde, x, t, case["n"])
    mean = x - f + big_g[:, None, None, None] ** 2 * score
    torch.testing.assert_close(big_g, case["rev_G"], rtol=2e-5, atol=1e-7)
    # With N = 10 the VP ladder's top level has beta = 2 (1.78 one level down): sqrt(1 - beta) is NaN there, in
    # score_sde's code and here alike (the predictor needs N > beta_max).
    torch.testing.assert_close(mean, x - case["rev_f"], rtol=2e-5, atol=2e-6, equal_nan=True)
    assert not torch.isnan(mean).any() or (case["kind"], case["n"]) == ("vp", 10)


def test_the_predictor_runs_in_pc_and_is_named_in_the_choices():
    from samplers import PREDICTORS, run_sampler

    assert "score_sde_reverse_diffusion" in PREDICTORS
    sde = make_sde("vp")
    x = sde.prior_sampling((8, 2), torch.Generator().manual_seed(0))
    out = run_sampler("pc", lambda x, t: -x, sde, x, steps=20, predictor="score_sde_reverse_diffusion",
                      corrector="none", generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_a_ladder_too_short_for_vp_is_refused_before_any_call():
    """With N <= beta_max the VP ladder's top step has beta >= 1 (NaN in score_sde's code): refused, named."""
    from samplers import run_sampler

    sde = make_sde("vp")
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    with pytest.raises(ValueError, match="score_sde's ladder with N = 6 levels"):
        run_sampler("pc", score, sde, torch.zeros(2, 2), steps=5, predictor="score_sde_reverse_diffusion")
    assert not calls
