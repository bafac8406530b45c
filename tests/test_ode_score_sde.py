"""The probability-flow ODE sampler against score_sde_pytorch's own `get_ode_sampler`, through numbers its code wrote
(tests/fixtures/make_score_sde_ode.py, commit cb1f359): VP, sub-VP and VE, scipy's RK45 from T to 1e-3 at rtol =
atol = 1e-5, with and without its final denoising, from a given latent, the exact score of Gaussian data.

Where ours differs, and by how much:
* The integrator: ours is torchdiffeq's dopri5, the same Dormand-Prince 5(4) pair as scipy's RK45, with its own
  step-size control (first step, error norm, step factors) and a float32 state where score_sde's state is float64.
  So the two agree to the tolerance, not to float precision: both lie within 2e-4 of the exact flow map (closed
  form for Gaussian data), and within 2e-4 of each other.
* The final denoising: score_sde's is one noise-free step of its reverse-diffusion predictor at t = 1e-3 on its
  N = 1000 ladder (x - f_0 + G_0^2 score), ours Tweedie's x0_hat. Its step is `score_sde_reverse_diffusion` with
  noise off: applied to its own undenoised sample, that gives its denoised sample to float32 rounding.
"""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from samplers import SAMPLERS
from samplers.pc import score_sde_reverse_diffusion_predictor
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "score_sde_ode.pt", weights_only=True)
DATA = GaussianMixture(
    torch.ones(1, dtype=torch.float64),
    FIXTURE["mean"].reshape(1, -1).double(),
    torch.tensor([FIXTURE["std"]], dtype=torch.float64),
)
T_MIN = 1e-3


def flat(x):
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("path", ["vp", "subvp", "ve"])
def test_ode_sampler_agrees_with_score_sdes_to_the_tolerance(path):
    sde = make_sde(path)
    plain = FIXTURE["cases"][f"{path}_plain"]
    z = flat(plain["z"])
    ts = torch.tensor([float(sde.T), T_MIN], dtype=torch.float64)
    ours = SAMPLERS["ode"](DATA.score_fn(sde), sde, z, ts, method="dopri5", rtol=1e-5, atol=1e-5, denoise=False)
    exact = DATA.flow_map(z.double(), float(sde.T), T_MIN, sde)
    theirs = flat(plain["x"]).double()
    assert float((theirs - exact).abs().max()) < 2e-4
    assert float((ours.double() - exact).abs().max()) < 2e-4
    assert float((ours.double() - theirs).abs().max()) < 2e-4


@pytest.mark.parametrize("path", ["vp", "subvp", "ve"])
def test_its_denoising_is_one_noise_free_reverse_diffusion_step_on_its_ladder(path):
    sde = make_sde(path)
    plain = flat(FIXTURE["cases"][f"{path}_plain"]["x"]).double()
    denoised = flat(FIXTURE["cases"][f"{path}_denoise"]["x"]).double()
    t = torch.full((plain.shape[0],), T_MIN, dtype=torch.float64)
    step = score_sde_reverse_diffusion_predictor(DATA.score_fn(sde), sde, plain, t, t, None, n_levels=1000, noise=False)
    torch.testing.assert_close(step, denoised, rtol=0, atol=3e-7)  # its float32 output
    # Ours, Tweedie's x0_hat there, is a different last step: 1e-5 to 5e-5 away (x - x0_hat is O(sigma^2) on the
    # ODE's path), over 30x the agreement above.
    tweedie = sde.denoise(plain, t, DATA.score(plain, t, sde))
    assert float((tweedie - denoised).abs().max()) > 9e-6
