"""RePaint (samplers/repaint.py): the authors' walk and sampler against their own code (a fixture it wrote), the
imputation against the exact conditional of a correlated Gaussian on every kind of path, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from models.guidance import inpaint
from samplers import SAMPLERS, count_nfe, time_grid
from samplers.repaint import repaint_levels, repaint_sample
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "repaint.pt", weights_only=True)

# x = (x_1, x_2) ~ N(0, [[1, rho], [rho, 1]]); knowing x_1 = 2, x_2 | x_1 ~ N(2 rho, 1 - rho^2) exactly.
RHO, KNOWN = 0.95, 2.0
GAUSS = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.tensor([[[1.0, RHO], [RHO, 1.0]]]))
COND_MEAN, COND_VAR = RHO * KNOWN, 1 - RHO**2


def chain_grid(n: int) -> torch.Tensor:
    """The levels of an n-step chain as our times: chain step k (0-based) is t = (k + 1) / n."""
    return torch.tensor([(k + 1) / n for k in range(n - 1, -1, -1)], dtype=torch.float64)


@pytest.mark.parametrize("key", sorted(FIXTURE["schedules"]))
def test_walk_is_the_authors_get_schedule_jump(key):
    t_T, jump_length, jump_n_sample = map(int, key.split("_"))
    assert repaint_levels(t_T, jump_length, jump_n_sample) == FIXTURE["schedules"][key].tolist()


@pytest.mark.parametrize("key", sorted(FIXTURE["runs"]))
def test_before_equals_the_authors_p_sample_loop(key):
    """Their loop re-noises the known part before each step (replace="before"), fixed-small variance, on their
    50-step linear chain = our "ddpm" path at N = 50. Their coefficients are float32 (`_extract_into_tensor`), so
    the imputed coordinate agrees to ~1e-6; its known coordinate is the model's last output, ours x_known."""
    jump_length, jump_n_sample = map(int, key.split("_"))
    n = FIXTURE["n"]
    sde = make_sde("ddpm", N=n)
    ours = repaint_sample(
        GAUSS_MIXTURE.score_fn(sde),
        sde,
        FIXTURE["x_T"],
        chain_grid(n),
        FIXTURE["gt"],
        FIXTURE["mask"],
        jump_length=jump_length,
        jump_n_sample=jump_n_sample,
        replace="before",
        generator=torch.Generator().manual_seed(FIXTURE["seed"]),
    )
    torch.testing.assert_close(ours[:, 1], FIXTURE["runs"][key][:, 1], rtol=1e-5, atol=1e-5)
    assert torch.equal(ours[:, 0], FIXTURE["gt"][:, 0])


# The fixture's data: the labelled 4-component mixture of tests/test_guidance_dhariwal.py.
GAUSS_MIXTURE = GaussianMixture(
    torch.tensor([0.4, 0.2, 0.15, 0.25], dtype=torch.float64),
    torch.tensor([[-2.0, -1.0], [-1.0, 1.5], [2.0, -1.0], [1.0, 1.5]], dtype=torch.float64),
    torch.tensor([0.4, 0.5, 0.3, 0.45], dtype=torch.float64),
)


def _impute(sde_name: str, n: int, levels: int, jump_n_sample: int, replace: str = "after", seed: int = 0):
    sde = make_sde(sde_name)
    g = torch.Generator().manual_seed(seed)
    x_known = torch.tensor([KNOWN, 0.0]).expand(n, 2)
    ts = time_grid(sde, levels - 1, sampler="ddim")
    x_T = sde.prior_sampling((n, 2), g)
    x = repaint_sample(GAUSS.score_fn(sde), sde, x_T, ts, x_known, torch.tensor([1.0, 0.0]), jump_length=10,
                       jump_n_sample=jump_n_sample, replace=replace, generator=g)  # fmt: skip
    assert torch.all(x[:, 0] == KNOWN)
    return x[:, 1]


@pytest.mark.parametrize("sde_name", ["vp", "ve", "edm", "rectified_flow"])
def test_resampling_approaches_the_exact_conditional(sde_name):
    """x_2 | x_1 = 2 is N(1.9, 0.0975). Replacement alone (jump_n_sample = 1, 60 levels) leaves x_2 near its
    marginal: mean 1.38-1.42, variance 0.17-0.18 (measured on these 4 paths, 2 seeds). Ten resamplings every 10
    levels bring the mean within 0.03-0.07 of 1.9 and the variance within 10 %: we require a mean error under a
    quarter of replacement's (and 0.12), and the variance within 20 % (its s.e. here ~3 %)."""
    n = 2000
    plain, resampled = _impute(sde_name, n, 60, 1), _impute(sde_name, n, 60, 10)
    se = math.sqrt(COND_VAR / n)
    plain_err, err = abs(plain.mean().item() - COND_MEAN), abs(resampled.mean().item() - COND_MEAN)
    assert plain_err > 0.3, plain_err
    assert err < min(plain_err / 4, 0.12) + 4 * se, (err, plain_err)
    assert abs(resampled.var().item() / COND_VAR - 1) < 0.2, resampled.var()


def test_one_sample_is_replacement_and_before_after_agree_in_distribution():
    """jump_n_sample = 1 is the replacement method with DDIM eta = 1 (`models.guidance.inpaint`; other draws, the
    same law); "before" and "after" differ only in which draw serves the known part."""
    n, sde = 4000, make_sde("vp")
    ts = time_grid(sde, 59, sampler="ddim")
    g = torch.Generator().manual_seed(3)
    x_known = torch.tensor([KNOWN, 0.0]).expand(n, 2)
    replaced = inpaint(SAMPLERS["ddim"], GAUSS.score_fn(sde), sde, sde.prior_sampling((n, 2), g), ts, x_known,
                       torch.tensor([1.0, 0.0]), generator=g, eta=1.0)[:, 1]  # fmt: skip
    se = 2 * math.sqrt(0.2 / n)  # two samples' means, variance <= 0.2 each
    one = _impute("vp", n, 60, 1, seed=4)
    assert abs(one.mean() - replaced.mean()) < 4 * se, (one.mean(), replaced.mean())
    after, before = _impute("vp", n, 60, 5, "after", seed=5), _impute("vp", n, 60, 5, "before", seed=6)
    assert abs(after.mean() - before.mean()) < 4 * se, (after.mean(), before.mean())
    assert abs(after.var() / before.var() - 1) < 0.15


def test_calls_are_the_down_moves_and_the_callback_sees_every_move():
    sde = make_sde("vp")
    walk = repaint_levels(30, 5, 3)
    counted = count_nfe(GAUSS.score_fn(sde))
    seen = []
    x_T = sde.prior_sampling((4, 2), torch.Generator().manual_seed(0))
    repaint_sample(counted, sde, x_T, time_grid(sde, 29), torch.zeros(4, 2), torch.tensor([1.0, 0.0]),
                   jump_length=5, jump_n_sample=3, callback=seen.append)  # fmt: skip
    assert counted.nfe == sum(b < a for a, b in zip(walk[:-1], walk[1:])) == 30 + 2 * 5 * 5
    assert len(seen) == len(walk) - 1 and float(seen[-1]["t"]) == 0.0


@pytest.mark.parametrize(
    "options, match",
    [
        ({"eta": 1.5}, "eta"),
        ({"jump_length": 0}, "jump_length"),
        ({"jump_n_sample": 2.5}, "jump_n_sample"),
        ({"replace": "during"}, "RePaint replace"),
        ({"levels": [9, 8, 6, -1]}, "one level at a time"),
        ({"levels": [8, 7, -1]}, "start at the top level 9"),
        ({"mask": torch.tensor([0.5, 1.0])}, "mask"),
    ],
)
def test_bad_input_is_refused_before_any_call(options, match):
    sde = make_sde("vp")
    counted = count_nfe(GAUSS.score_fn(sde))
    mask = options.pop("mask", torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=match):
        repaint_sample(counted, sde, torch.zeros(2, 2), time_grid(sde, 9), torch.zeros(2, 2), mask, **options)
    assert counted.nfe == 0


def test_image_shaped_data_and_a_broadcast_mask():
    """Events shaped (1, 2, 2), a mask (1, 2, 2) shared by the batch, on a path whose alpha_t is 1 (EDM) and on the
    chain: the known pixels are x_known's, and the imputed ones take the mode the known ones decide (two modes at
    all -1 and all +1, std 0.3: the exact conditional puts them there with weight 1 - 1e-20)."""
    for sde_name in ("edm", "ddpm"):
        sde = make_sde(sde_name)
        mixture = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0] * 4, [1.0] * 4]),
                                  torch.tensor([0.3, 0.3]), shape=(1, 2, 2))  # fmt: skip
        g = torch.Generator().manual_seed(0)
        x_known = mixture.sample(16, g)
        mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        x = repaint_sample(mixture.score_fn(sde), sde, sde.prior_sampling((16, 1, 2, 2), g), time_grid(sde, 19),
                           x_known, mask, jump_length=5, jump_n_sample=2, generator=g)  # fmt: skip
        assert x.shape == (16, 1, 2, 2) and torch.isfinite(x).all()
        assert torch.equal(x[:, 0, 0, 0], x_known[:, 0, 0, 0]) and torch.equal(x[:, 0, 1, 1], x_known[:, 0, 1, 1])
        mode = torch.sign(x_known[:, 0, 0, 0] + x_known[:, 0, 1, 1])
        assert (torch.sign(x[:, 0, 0, 1]) == mode).all() and (torch.sign(x[:, 0, 1, 0]) == mode).all()
