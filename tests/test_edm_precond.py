"""The "edm" and "score_sde" parameterisations against EDM's own `EDMPrecond` and `VPPrecond`, through numbers its
code wrote (tests/fixtures/make_edm_precond.py, NVlabs/edm commit 008a4e5) around the same stand-in network F.

* `EDMPrecond` (Karras et al. 2022, Table 1; sigma_data 0.5): D = c_skip y + c_out F(c_in y; log(sigma) / 4) is
  `ScoreModel(..., parameterization="edm")`'s denoiser on EDM's path (t = sigma): same F inputs, same D.
* `VPPrecond` (its wrapper of Song et al.'s VP networks: F sees y / sqrt(sigma^2 + 1) = x_t and 999 t, and
  D = y - sigma F) is `parameterization="score_sde"` on the VP path (beta 0.1 .. 20), at the time whose noise level
  sigma_t / alpha_t is its sigma: so score_sde's VP checkpoints and EDM's VP ones take the same wrapper here.
"""

from pathlib import Path

import pytest
import torch

from models.score import ScoreModel
from sde import make_sde

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "edm_precond.pt", weights_only=True)


def stand_in(x_in, noise_label):
    """The fixture's F (tests/fixtures/make_edm_precond.py)."""
    label = noise_label.reshape(-1, 1, 1, 1)
    return torch.tanh(0.7 * x_in + 0.3 * x_in.flip(-1) + 0.2 * label) - 0.1 * label * x_in


class Recording(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x_in, noise_label, y=None):
        self.seen.append((x_in, noise_label))
        return stand_in(x_in, noise_label)


@pytest.mark.parametrize("case", ["edm", "vp"])
def test_our_preconditioning_is_edms(case):
    run = FIXTURE["cases"][case]
    net = Recording()
    if case == "edm":
        sde = make_sde("edm")
        model = ScoreModel(net, sde, parameterization="edm", sigma_data=0.5)
        t, x = run["sigma"], run["y"]
    else:
        sde = make_sde("vp")
        model = ScoreModel(net, sde, parameterization="score_sde")
        t = sde.t_from_logsnr(-torch.log(run["sigma"].double())).float()
        x = run["y"] * sde.marginal(t)[0].reshape(-1, 1, 1, 1)  # x_t = alpha_t y
    with torch.no_grad():
        d = model.denoise(x, t)
    torch.testing.assert_close(net.seen[0][0], run["x_in"], rtol=1e-5, atol=1e-5)
    if case == "edm":
        torch.testing.assert_close(net.seen[0][1], run["noise_label"], rtol=1e-5, atol=1e-5)
    else:  # its 999 t(sigma) = 999 (sqrt(b0^2 + 2 bd log(1 + sigma^2)) - b0) / bd cancels in float32 at small sigma
        sigma = run["sigma"].double()
        exact = 999 * ((0.1**2 + 2 * 19.9 * torch.log1p(sigma**2)).sqrt() - 0.1) / 19.9
        torch.testing.assert_close(net.seen[0][1].double(), exact, rtol=1e-6, atol=1e-4)  # ours: float32 of it
        torch.testing.assert_close(run["noise_label"].double(), exact, rtol=1e-3, atol=0)  # its: 4e-4 at worst
    torch.testing.assert_close(d, run["D"], rtol=1e-5, atol=1e-4)
