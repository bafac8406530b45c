"""UniPC against Zhao et al.'s own code, through samples it wrote (tests/fixtures/make_unipc_zhao.py, wl-zhao/UniPC
commit cf9de85): data- and noise-prediction UniPC (our prediction "data" / "noise"; UniP-p with UniC, no corrector
after the last step) of orders 2 and 3 in both B(h) variants, on DDPM's discrete schedule (N = 1000; its piecewise-
linear log alpha_t is our `DiscreteChain`), its time_uniform and logSNR grids from 1 to 1/N, 6 and 15 steps, with
and without its lower_order_final (which lowers the last steps at any step count: our "last"), and its
denoise_to_zero (our final denoising) on the 6-step runs, for the exact noise predictor of Gaussian data."""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from sde.discrete import DiscreteChain

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "unipc_zhao.pt", weights_only=True)
CHAIN = DiscreteChain(FIXTURE["betas"])
SHAPE = tuple(FIXTURE["x_T"].shape[1:])
D = FIXTURE["x_T"][0].numel()
DATA = GaussianMixture(torch.ones(1), torch.full((1, D), FIXTURE["mean"]), torch.tensor([FIXTURE["std"]]), shape=SHAPE)


def ours(case: dict, order: int | None = None) -> torch.Tensor:
    return SAMPLERS["unipc"](
        DATA.score_fn(CHAIN), CHAIN, FIXTURE["x_T"], case["ts"], order=order or case["order"],
        variant=case["variant"], lower_order_final="last" if case["lower"] else "none", denoise=case["denoise"],
        prediction="data" if case["algorithm"] == "data_prediction" else "noise",
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    FIXTURE["cases"],
    ids=lambda c: (
        f"{c['algorithm']}-{c['order']}-{c['variant']}-{c['steps']}-{c['skip']}-{'lower' if c['lower'] else 'x'}"
    ),
)
def test_unipc_equals_zhaos_code(case):
    torch.testing.assert_close(ours(case), case["x"], rtol=1e-6, atol=1e-6)


def test_another_order_is_not_zhaos():
    """Order 2 against its order-3 run differs by far more than float error (the equality above is not vacuous)."""
    case = next(c for c in FIXTURE["cases"] if c["order"] == 3 and c["steps"] == 15)
    assert (ours(case, order=2) - case["x"]).abs().max() > 1e-4
