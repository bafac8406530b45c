"""SA-Solver (Xue et al. 2023): stochastic Adams predictor-corrector in log-SNR lambda for the SDE family whose
noise is scaled by tau (tau = 0: the probability-flow ODE; tau = 1: the reverse SDE), for every Gaussian path.

Data-prediction form, a step from lambda_s to lambda_t (h = lambda_t - lambda_s, kappa = 1 + tau^2, u = lambda -
lambda_t, x0_hat = `sde.denoise` interpolated by the Lagrange polynomial L through the last k points):

    x_t = (sigma_t / sigma_s) e^{-tau^2 h} x_s + kappa alpha_t int_{-h}^0 e^{kappa u} L(u) du
          + sigma_t sqrt(1 - e^{-2 tau^2 h}) xi,

and the noise-prediction form (`prediction="noise"`, eps = -sigma score)

    x_t = (alpha_t / alpha_s) x_s - kappa sigma_t int_{-h}^0 e^{-u} L(u) du + tau sigma_t sqrt(e^{2h} - 1) xi

(their SA-Predictor and SA-Corrector, written in lambda). The SA-Predictor (order p) interpolates the last p
evaluations; the SA-Corrector
(order c) redoes the step with the evaluation just made at its end among c points and the predictor's own noise xi,
so the corrector costs no extra call (as UniPC's). At order 2 in the data form both use the authors' few-step
modification (their code's few_steps mode, and diffusers' SASolverScheduler; `rescale=False` turns it off): the
linear term's weight int e^{kappa u} (u + h) du is replaced by h^2 / 2 (divided by the earlier step's length in the
predictor, by h in the corrector), the same to second order. tau applies where the noise level sigma_t / alpha_t lies
in [tau_sigma_min, tau_sigma_max] (the defaults are diffusers' default window, timesteps 200-800 of DDPM's
1000-step chain), 0 elsewhere; the level that decides is the step's end (`tau_at="end"`, the authors' code, whose
last step is also deterministic) or its start (`"start"`, diffusers').
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, as_time

from .base import check_choice, check_grid, check_option, final_denoise, randn_like

# diffusers' default tau window (timesteps 200 and 800 of the linear 1000-step chain) as noise levels sigma / alpha.
TAU_SIGMA_MIN, TAU_SIGMA_MAX = 0.7236, 25.736
SA_ORDERS = (1, 2, 3, 4)
TAU_AT = ("end", "start")


def exp_moments(kappa: float, h: float, n: int) -> list[float]:
    """I_k = int_{-h}^0 e^{kappa u} u^k du for k < n (integration by parts: I_k = -(-h)^k e^{-kappa h} / kappa -
    k I_{k-1} / kappa)."""
    decay = math.exp(-kappa * h)
    moments = [-math.expm1(-kappa * h) / kappa]
    for k in range(1, n):
        moments.append(-((-h) ** k) * decay / kappa - k * moments[-1] / kappa)
    return moments


def lagrange_weights(nodes: list[float], kappa: float, h: float) -> list[float]:
    """int_{-h}^0 e^{kappa u} l_i(u) du for the Lagrange basis l_i through `nodes` (u-coordinates)."""
    moments = exp_moments(kappa, h, len(nodes))
    weights = []
    for i, ui in enumerate(nodes):
        poly = [1.0]  # coefficients of l_i in powers of u, lowest first
        for j, uj in enumerate(nodes):
            if j != i:
                poly = [a - uj * b for a, b in zip([0.0, *poly], [*poly, 0.0])]
                poly = [c / (ui - uj) for c in poly]
        weights.append(sum(c * m for c, m in zip(poly, moments)))
    return weights


def sa_update(
    x: Tensor,
    preds: list[Tensor],
    lams: list[float],
    lam_s: float,
    lam_t: float,
    alpha: tuple[float, float],
    sigma: tuple[float, float],
    tau: float,
    noise: Tensor,
    prediction: str,
    corrector: bool,
    rescale: bool = True,
) -> Tensor:
    """One SA-Predictor / SA-Corrector step from x at lam_s to lam_t; preds (newest first) at lams."""
    h, kappa = lam_t - lam_s, 1.0 + tau**2
    nodes = [lam - lam_t for lam in lams]
    if prediction == "data":
        weights = lagrange_weights(nodes, kappa, h)
        if rescale and len(preds) == 2:  # the authors' few-step order-2 modification (e^{kappa u} dropped from the
            # linear term's weight)
            linear = h**2 / 2 - (h * kappa + math.expm1(-kappa * h)) / kappa**2
            shift = linear / h if corrector else linear / (lams[0] - lams[1])
            weights = [weights[0] + shift, weights[1] - shift]
        out = (sigma[1] / sigma[0]) * math.exp(-(tau**2) * h) * x
        out = out + sum(kappa * alpha[1] * w * p for w, p in zip(weights, preds))
        return out + sigma[1] * math.sqrt(-math.expm1(-2 * tau**2 * h)) * noise
    weights = lagrange_weights(nodes, -1.0, h)
    out = (alpha[1] / alpha[0]) * x - sum(kappa * sigma[1] * w * p for w, p in zip(weights, preds))
    return out + tau * sigma[1] * math.sqrt(math.expm1(2 * h)) * noise


def check_sa_options(
    predictor_order, corrector_order, tau, tau_sigma_min, tau_sigma_max, lower_order_final, rescale=True, tau_at="end"
) -> None:
    """Validate SA-Solver's options (one-line errors naming the value and what is allowed)."""
    check_choice("SA-Solver predictor_order", predictor_order, SA_ORDERS)
    check_choice("SA-Solver corrector_order", corrector_order, (0, *SA_ORDERS))
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and 0 <= tau < math.inf):
        raise ValueError(f"SA-Solver tau must be a number >= 0, got {tau!r}")
    if not (isinstance(tau_sigma_max, (int, float)) and not isinstance(tau_sigma_max, bool) and tau_sigma_max > 0):
        raise ValueError(f"SA-Solver tau_sigma_max must be a number > 0 (inf: no upper limit), got {tau_sigma_max!r}")
    if not (isinstance(tau_sigma_min, (int, float)) and 0 <= tau_sigma_min <= tau_sigma_max):
        raise ValueError(
            f"SA-Solver tau_sigma_min must lie in [0, tau_sigma_max = {tau_sigma_max}], got {tau_sigma_min!r}"
        )
    check_choice("SA-Solver lower_order_final", lower_order_final, ("none", "last"))
    check_choice("SA-Solver tau_at", tau_at, TAU_AT)
    if not isinstance(rescale, bool):
        raise ValueError(f"SA-Solver rescale must be True or False, got {rescale!r}")


def sa_solver_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    predictor_order: int = 3,
    corrector_order: int = 4,
    tau: float = 1.0,
    tau_sigma_min: float = TAU_SIGMA_MIN,
    tau_sigma_max: float = TAU_SIGMA_MAX,
    prediction: str = "data",
    lower_order_final: str = "none",
    rescale: bool = True,
    tau_at: str = "end",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """SA-Solver with predictor order p and corrector order c (0: no corrector), Xue et al. 2023; NFE =
    steps (+1 denoise). Warm-up: orders min(p, i + 1) and min(c, i + 2). With tau = 0 it converges at order
    min(p + 1, c) (c = 0: p), measured against the exact flow map. lower_order_final="last" (the authors' few-step
    mode and diffusers' default) also caps them by the steps left (p: steps - i, c: steps - i + 1); its last step,
    of order 1 and uncorrected, then caps the whole at second order (measured: p = 3, c = 4 at 320 -> 640 steps
    2.2, against 4.0 with "none", the default)."""
    check_sa_options(
        predictor_order, corrector_order, tau, tau_sigma_min, tau_sigma_max, lower_order_final, rescale, tau_at
    )
    check_option("prediction", prediction)
    check_grid(sde, ts)
    ts = ts.to(x.device, torch.float64)
    alphas, sigmas = (v.tolist() for v in sde.marginal(ts))
    lams = sde.logsnr(ts).tolist()
    steps, preds, x_prev, noise_prev, c = len(ts) - 1, [], None, None, 0
    stochastic = [tau_sigma_min <= s / a <= tau_sigma_max for a, s in zip(alphas, sigmas)]
    at = 1 if tau_at == "end" else 0
    taus = [tau if stochastic[i + at] and (tau_at == "start" or i < steps - 1) else 0.0 for i in range(steps)]
    for i in range(steps):
        t = as_time(float(ts[i]), x)
        score = score_fn(x, t)
        pred = sde.denoise(x, t, score) if prediction == "data" else -sigmas[i] * score  # x0_hat or eps
        preds = [pred, *preds][: max(predictor_order, corrector_order)]
        if x_prev is not None and c > 0:  # SA-Corrector of the last step, with its new end point
            x = sa_update(x_prev, preds[:c], lams[i - c + 1 : i + 1][::-1], lams[i - 1], lams[i],
                          (alphas[i - 1], alphas[i]), (sigmas[i - 1], sigmas[i]), taus[i - 1], noise_prev,
                          prediction, True, rescale)  # fmt: skip
        p = min(predictor_order, i + 1)
        c = min(corrector_order, i + 2)
        if lower_order_final == "last":
            p, c = min(p, steps - i), min(c, steps - i + 1)
        noise = randn_like(x, generator)
        x_prev, noise_prev = x, noise
        x = sa_update(x, preds[:p], lams[i - p + 1 : i + 1][::-1], lams[i], lams[i + 1],
                      (alphas[i], alphas[i + 1]), (sigmas[i], sigmas[i + 1]), taus[i], noise, prediction, False,
                      rescale)  # fmt: skip
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
