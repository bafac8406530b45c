"""Classifier guidance against Dhariwal & Nichol's own code, through numbers it wrote (tests/fixtures/
make_guided_diffusion.py, openai/guided-diffusion commit 22e0df8): its "linear" 50-step chain, the exact eps of a
labelled 2-D Gaussian mixture as the model and the exact scale * grad log p_t(y | x) as its `cond_fn`.

* DDIM (their Alg. 2, `condition_score`: eps - sqrt(1 - abar) grad) is ours exactly: `classifier_score_fn` adds
  scale * grad to the score, and eps = -sigma score. Whole runs, eta 0 and 1, same noise.
* Ancestral sampling (their Alg. 1, `condition_mean`: mu + Sigma grad) is not: ours moves the score, so the mean
  moves by c_0 sigma_t^2 / alpha_t * grad = beta_t / sqrt(1 - beta_t) * grad (the posterior mean's weight on x0_hat
  times x0_hat's on the score), theirs by the step's variance Sigma_t (beta-tilde_t fixed-small, beta_t
  fixed-large). The unguided steps are equal; the test checks both shifts on single steps, from their numbers.
"""

from pathlib import Path

import pytest
import torch

from data.toy import GaussianMixture
from models.guidance import classifier_score_fn
from samplers import SAMPLERS, ancestral_step, final_denoise, time_grid
from sde import make_sde
from tests.test_guidance import OracleNoisyClassifier

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "guided_diffusion.pt", weights_only=True)
N, SCALE, SEED, Y = FIXTURE["n"], FIXTURE["scale"], FIXTURE["seed"], FIXTURE["y"]
MIXTURE = GaussianMixture(
    torch.tensor([0.4, 0.2, 0.15, 0.25], dtype=torch.float64),
    torch.tensor([[-2.0, -1.0], [-1.0, 1.5], [2.0, -1.0], [1.0, 1.5]], dtype=torch.float64),
    torch.tensor([0.4, 0.5, 0.3, 0.45], dtype=torch.float64),
    labels=torch.tensor([0, 0, 1, 1]),
)
SDE = make_sde("ddpm", N=N)  # beta(t) / N from 0.1 to 20: its "linear" schedule at N = 50


def scores():
    plain = MIXTURE.score_fn(SDE)
    return plain, classifier_score_fn(plain, OracleNoisyClassifier(MIXTURE, SDE), SDE, Y, SCALE)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_classifier_guidance_is_their_algorithm_2(eta):
    ts = time_grid(SDE, N - 1, t_min=1 / N, kind="uniform")
    _, guided = scores()
    ours = SAMPLERS["ddim"](guided, SDE, FIXTURE["x_T"], ts, eta=eta, generator=torch.Generator().manual_seed(SEED))
    torch.testing.assert_close(ours, FIXTURE["loops"][f"ddim_eta{int(eta)}"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("var_type, variance", [("FIXED_SMALL", "posterior"), ("FIXED_LARGE", "forward")])
@pytest.mark.parametrize("step", [49, 25, 5, 1, 0])
def test_ancestral_guidance_shifts_the_mean_by_beta_over_sqrt_alpha_where_theirs_uses_sigma(var_type, variance, step):
    plain, guided = scores()
    x = FIXTURE["x_mid"]
    t = torch.full((x.shape[0],), (step + 1) / N, dtype=torch.float64)
    s = torch.full_like(t, step / N)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)

    def ours(score_fn):
        if step == 0:  # their last step is the noise-free mean: our final denoising at t = 1/N
            return final_denoise(score_fn, SDE, x, 1 / N, True)
        return ancestral_step(SDE, x, t, s, score_fn(x, t), noise, variance)

    theirs_plain = FIXTURE["steps"][f"{var_type}_{step}_plain"]
    theirs_guided = FIXTURE["steps"][f"{var_type}_{step}_guided"]
    torch.testing.assert_close(ours(plain), theirs_plain, rtol=1e-5, atol=1e-5)
    scale_grad = guided(x, t) - plain(x, t)  # scale * grad log p_t(y | x)
    beta = SDE.betas[step].double()
    torch.testing.assert_close(ours(guided) - ours(plain), beta / (1 - beta).sqrt() * scale_grad, rtol=1e-8, atol=1e-10)
    abar = torch.cumprod(1 - SDE.betas.double(), 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    beta_tilde = SDE.betas.double() * (1 - abar_prev) / (1 - abar)
    sigma2 = beta_tilde[step] if var_type == "FIXED_SMALL" else (beta_tilde[1] if step == 0 else beta)
    torch.testing.assert_close(theirs_guided - theirs_plain, sigma2 * scale_grad, rtol=1e-4, atol=2e-6)
