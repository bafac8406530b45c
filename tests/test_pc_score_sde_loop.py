"""The PC sampler's loop="score_sde" against score_sde_pytorch's own `get_pc_sampler`, through samples its code wrote
(tests/fixtures/make_score_sde_runs.py, peer commit cb1f359): on its VP, sub-VP and VE SDEs with N = 100 levels, its
predictors (reverse diffusion, Euler-Maruyama, ancestral, none) and correctors (Langevin, ALD, none), the exact
score of N(m, 0.5^2 I) data, the same prior draw and noise stream. Ours: the uniform grid of N times from T to 1e-3
(its linspace(T, eps, N)), its predictors, per_sample_step=False (its batch-averaged Langevin step)."""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS, count_nfe
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "score_sde_pc.pt", weights_only=True)
DATA = GaussianMixture(torch.ones(1), FIXTURE["mean"].reshape(1, -1).double(), torch.tensor([FIXTURE["std"]]),
                       shape=FIXTURE["shape"][1:])  # fmt: skip
PATHS = {
    "vp": ("vp", {"beta_min": 0.1, "beta_max": 20.0}),
    "subvp": ("subvp", {"beta_min": 0.1, "beta_max": 20.0}),
    "ve": ("ve", {"sigma_min": 0.01, "sigma_max": 50.0}),
}
PREDICTORS = {"rd": "score_sde_reverse_diffusion", "em": "euler_maruyama", "anc": "score_sde_ancestral",
              "none": "none"}  # fmt: skip


def run(case: dict, loop: str = "score_sde") -> tuple[torch.Tensor, int]:
    name, kwargs = PATHS[case["path"]]
    sde = make_sde(name, **kwargs)
    g = torch.Generator().manual_seed(FIXTURE["seed"])
    x_T = torch.randn(FIXTURE["shape"], generator=g) * (kwargs["sigma_max"] if name == "ve" else 1.0)
    score = DATA.score_fn(sde)
    counted = count_nfe(lambda x, t: score(x.double(), t.double()).to(x.dtype))
    ts = torch.linspace(sde.T, 1e-3, FIXTURE["n"], dtype=torch.float64)
    x = SAMPLERS["pc"](counted, sde, x_T, ts, predictor=PREDICTORS[case["predictor"]], corrector=case["corrector"],
                       snr=case["snr"], n_corrector_steps=case["n_steps"], per_sample_step=False, loop=loop,
                       generator=g)  # fmt: skip
    return x, counted.nfe


@pytest.mark.parametrize(
    "case", FIXTURE["cases"], ids=lambda c: f"{c['path']}-{c['predictor']}-{c['corrector']}-{c['n_steps']}"
)
def test_pc_equals_score_sdes_pc_sampler(case):
    """Same prior draw, same noise stream, float32 as score_sde runs: equal to float32 rounding after 100 levels."""
    ours, nfe = run(case)
    torch.testing.assert_close(ours, case["x"], rtol=1e-5, atol=1e-5)  # measured: <= 2.5e-6
    per_level = (case["predictor"] != "none") + (case["corrector"] != "none") * case["n_steps"]
    assert nfe == FIXTURE["n"] * per_level


def test_the_loops_differ():
    """The paper's Alg. 1 loop (predictor first, Tweedie at the end) is not score_sde's: the same inputs give other
    samples, so the equality above is not vacuous."""
    case = FIXTURE["cases"][0]
    ours, _ = run(case, loop="predictor_first")
    assert (ours - case["x"]).abs().max() > 1e-2


def test_score_sde_loop_refuses_our_exact_step_predictors():
    """Our reverse-diffusion and ancestral steps go to the next grid time, which score_sde's last step does not
    have: refused by name, before any score evaluation."""
    sde = make_sde("vp")
    ts = torch.linspace(1.0, 1e-3, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="predictor 'reverse_diffusion' does not run in loop 'score_sde'"):
        SAMPLERS["pc"](None, sde, torch.zeros(2, 2), ts, predictor="reverse_diffusion", loop="score_sde")
    with pytest.raises(ValueError, match="'score_sde_ancestral' needs a VP or VE path"):
        SAMPLERS["pc"](None, make_sde("subvp"), torch.zeros(2, 2), ts, predictor="score_sde_ancestral")
    with pytest.raises(ValueError, match="unknown PC loop 'alg2'"):
        SAMPLERS["pc"](None, sde, torch.zeros(2, 2), ts, loop="alg2")
