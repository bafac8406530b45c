"""DPM-Solver++ and DPM-Solver against Lu et al.'s own code, through samples it wrote (tests/fixtures/
make_dpm_solver_lu.py, LuChengTHU/dpm-solver commit 52bc3fb): its multistep DPM-Solver++ (algorithm_type
"dpmsolver++", our prediction="data") and DPM-Solver ("dpmsolver", our prediction="noise") of orders 2 and 3 in both
of its solver types, and its singlestep_fixed DPM-Solver-k / DPM-Solver++(kS) (our method="singlestep"; 12 and 30
calls, its inner points evenly in its grid's variable: our inner="t" on its time_uniform grid) and its DPM-Solver-fast
(its method="singlestep", our method="fast": 10, 11 and 12 calls, orders 2 and 3) and DPM-Solver-12 / -23 (its
method="adaptive", ours), on DDPM's discrete
schedule (N = 1000; its piecewise-linear log alpha_t in t is our `DiscreteChain`), its time_uniform and logSNR grids
from 1 to 1/N, 6 steps (where it lowers the last steps' order: our lower_order_final="last") and 15 (where it does
not: "none"), with and without its final denoise_to_zero (our final denoising), for the exact noise predictor of
Gaussian data. Its third-order step has the libraries' quadratic coefficient (our third_order="reference"); its
"dpmsolver" / "taylor" types are our solver_type "midpoint" / "heun"."""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from sde.discrete import DiscreteChain

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "dpm_solver_lu.pt", weights_only=True)
CHAIN = DiscreteChain(FIXTURE["betas"])
DIM = FIXTURE["x_T"].shape[1]
DATA = GaussianMixture(torch.ones(1), torch.full((1, DIM), FIXTURE["mean"]), torch.tensor([FIXTURE["std"]]))
SOLVER_TYPES = {"dpmsolver": "midpoint", "taylor": "heun"}


def ours(case: dict, third_order: str = "reference", score_fn=None) -> torch.Tensor:
    # Its singlestep steps place their inner calls evenly in its grid's variable: in t on its time_uniform grid.
    inner = "t" if case["method"] in ("singlestep", "fast") and case["skip"] == "time_uniform" else "logsnr"
    tolerances = {"rtol": case["rtol"], "atol": case["atol"]} if case["method"] == "adaptive" else {}
    return SAMPLERS["dpm_solver"](
        score_fn or DATA.score_fn(CHAIN), CHAIN, FIXTURE["x_T"], case["ts"], order=case["order"],
        third_order=third_order, solver_type=SOLVER_TYPES[case["solver_type"]],
        lower_order_final="last" if case["steps"] < 10 else "none",
        prediction="data" if case["algorithm"] == "dpmsolver++" else "noise", denoise=case["denoise"],
        method=case["method"], inner=inner, **tolerances,
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    FIXTURE["cases"],
    ids=lambda c: (
        f"{c['algorithm']}-{c['order']}M-{c['solver_type']}-{c['steps']}-{c['skip']}-"
        f"{'denoise' if c['denoise'] else 'x'}"
    ),
)
def test_dpm_solver_equals_lus_code(case):
    torch.testing.assert_close(ours(case), case["x"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [c for c in FIXTURE["cases"] if c["method"] == "adaptive"], ids=str)
def test_adaptive_dpm_solver_takes_lus_steps_with_at_most_its_calls(case):
    """DPM-Solver-12 / -23 accept and reject the same steps as Lu et al.'s code (the samples above are equal), and
    reuse the prediction at lambda_s after a rejection, which its code computes again: at most its calls."""
    from samplers import CountingScoreFn

    score = CountingScoreFn(DATA.score_fn(CHAIN))
    ours(case, score_fn=score)
    assert score.nfe <= case["calls"]
    assert score.nfe > case["calls"] / 2


def test_exact_third_order_is_not_lus():
    """Our default third-order coefficient is not the code's (so the equality above is not vacuous for 3M)."""
    case = next(c for c in FIXTURE["cases"] if c["order"] == 3 and c["steps"] == 15 and c["algorithm"] == "dpmsolver++")
    assert (ours(case, third_order="exact") - case["x"]).abs().max() > 1e-4
