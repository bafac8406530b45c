"""The eps-to-score wrapper and the DSM losses against the closed-form Gaussian-mixture oracle."""

import pytest
import torch

from data.toy import GaussianMixture, make_mixture
from losses.dsm import dsm_loss, ideal_dsm_value, loss_fn, sample_time
from models import ScoreModel
from sde import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE

SDES = [VPSDE(), SubVPSDE(), VESDE(), DiscreteVPSDE(N=1000)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
@pytest.mark.parametrize("shape", [(2,), (1, 2, 2)])
def test_wrapper_of_oracle_eps_is_exact_score(sde, shape):
    """ScoreModel(eps*, sde) gives -eps*/sigma = the closed-form score, and Tweedie's denoiser E[x_0 | x_t]."""
    dim = int(torch.tensor(shape).prod())
    mix = make_mixture("gmm2d", dim=dim)
    mix = GaussianMixture(mix.weights, mix.means, mix.covs, shape=shape)
    model = ScoreModel(mix.eps_net(sde), sde).double()
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(16, *shape, generator=g, dtype=torch.float64)
    t = 0.02 + 0.97 * torch.rand(16, generator=g, dtype=torch.float64)
    torch.testing.assert_close(model(x, t), mix.score(x, t, sde), rtol=1e-8, atol=1e-10)
    # Tweedie for a single Gaussian N(m, v I): E[x_0 | x_t] = m + alpha v (x_t - alpha m) / (alpha^2 v + sigma^2).
    one = GaussianMixture(torch.ones(1), torch.full((1, dim), 0.7), torch.tensor([0.5]), shape=shape)
    model = ScoreModel(one.eps_net(sde), sde).double()
    alpha, sigma = (v.reshape(-1, *[1] * len(shape)) for v in sde.marginal(t))
    expected = 0.7 + alpha * 0.25 * (x - alpha * 0.7) / (alpha**2 * 0.25 + sigma**2)
    torch.testing.assert_close(model.denoise(x, t), expected, rtol=1e-6, atol=1e-8)  # 1/alpha_t amplifies rounding


@pytest.mark.parametrize("sde", SDES[:3], ids=lambda s: s.name)
def test_dsm_loss_of_oracle_is_irreducible_and_perturbed_is_worse(sde):
    """Oracle loss = E[Var(noise | x_t)] (closed form) within 4 s.e.; a perturbed model is significantly worse."""
    d, n = 3, 20000
    var = torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)
    mix = GaussianMixture(torch.ones(1), torch.zeros(1, d), torch.diag(var)[None])
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(n, g, dtype=torch.float64)
    t = 0.01 + 0.99 * torch.rand(n, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    oracle = ScoreModel(mix.eps_net(sde), sde).double()
    loss = dsm_loss(oracle, sde, x0, t, noise)
    ideal = ideal_dsm_value(sde, t, var)
    stderr = (loss - ideal).std() / n**0.5
    assert abs((loss - ideal).mean()) < 4 * stderr

    class Perturbed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mix.eps_net(sde)

        def forward(self, x, label):
            return 1.1 * self.inner(x, label)

    worse = dsm_loss(ScoreModel(Perturbed(), sde).double(), sde, x0, t, noise)
    assert (worse - loss).mean() > 10 * (worse - loss).std() / n**0.5


def test_likelihood_weighting_is_g2_over_sigma2():
    sde = VPSDE()
    mix = make_mixture("gmm2d")
    model = ScoreModel(mix.eps_net(sde), sde).double()
    x0 = mix.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64)
    noise = torch.randn_like(x0)
    plain = dsm_loss(model, sde, x0, t, noise)
    weighted = dsm_loss(model, sde, x0, t, noise, weighting="likelihood")
    torch.testing.assert_close(weighted, plain * sde.beta(t) / sde.marginal(t)[1] ** 2)


def test_time_sampling():
    """Continuous t in [t_min, 1]; DDPM's t = i/N, i uniform on 1..N; SMLD's ladder times i/(L-1)."""
    g = torch.Generator().manual_seed(0)
    sde = VPSDE()
    t = sample_time(sde, 10000, "continuous", t_min=0.2, generator=g)
    assert t.min() >= 0.2 and t.max() <= 1 and abs(t.mean().item() - 0.6) < 0.01
    t = sample_time(sde, 20000, "ddpm", num_scales=10, generator=g)
    assert set((t * 10).round().long().tolist()) == set(range(1, 11))
    t = sample_time(VESDE(), 20000, "smld", num_scales=5, generator=g)
    assert set((t * 4).round().long().tolist()) == set(range(5))
    with pytest.raises(ValueError, match="valid"):
        sample_time(sde, 4, "bogus")
    with pytest.raises(ValueError, match="valid"):
        loss_fn(ScoreModel(make_mixture().eps_net(sde), sde), sde, torch.zeros(2, 2), weighting="bogus")
