"""Multistep DPM-Solver++ (Lu et al. 2022b), deterministic (the probability-flow ODE) or stochastic (eta > 0), for
10-20 NFE; and DPM-Solver (Lu et al. 2022a) in its multistep form (Lu et al. 2022b, App.; their code's
algorithm_type "dpmsolver"), which extrapolates the noise prediction instead (`prediction="noise"`; with eta > 0
SDE-DPM-Solver, `noise_sde_update`). The 2022a paper's own singlestep algorithms, DPM-Solver-fast and the adaptive
DPM-Solver-12 / -23 are `method="singlestep"`, `"fast"` and `"adaptive"`; with eta > 0 the singlestep steps are
ancestral, and `method="sde"` is k-diffusion's DPM++ SDE (samplers/dpm_solver_singlestep.py).

With lambda_t = `sde.logsnr(t)` the probability-flow ODE is solved exactly in its linear part (an exponential
integrator) and the data prediction x0_hat = `sde.denoise` is extrapolated in lambda from the previous steps'
evaluations (one score evaluation per step). It reads only the marginals, so it serves every Gaussian path.

The noise form is the data form with the roles swapped: x / alpha moves by -int e^{-lambda} eps dlambda where
x / sigma moves by int e^{lambda} x0_hat dlambda, so `dpm_solver_update` serves both, called with eps for x0_hat,
-lambda for lambda, alpha for sigma and sigma for alpha. Its order-1 step is DDIM; its 2M / 3M steps are
(x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) D0 - ...) Lu et al.'s multistep DPM-Solver updates and diffusers'
algorithm_type="dpmsolver", with the same midpoint / heun forms and the same factor 2 question at third order.

Third order: through the last three data predictions P(u) = c0 + c1 u + c2 u^2 (u = lambda - lambda_t), and
int_0^h e^{-(h - u)} u^2 du = -2 h^2 phi_3(h), so the quadratic term enters with coefficient 2 phi_3
(`third_order="exact"`, the default: measured order 3 on VP, sub-VP and VE). Lu et al.'s reference code,
diffusers' DPMSolverMultistepScheduler and k-diffusion's sample_dpmpp_3m_sde use phi_3 (half of it), which
makes the method second order; `third_order="reference"` keeps that for bit-compatibility (docs/samplers.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, as_time

from .base import check_grid, check_option, final_denoise, randn_like
from .dpm_solver_singlestep import (
    adaptive_solve,
    ancestral_update,
    fast_orders,
    fast_schedule,
    pid_adaptive_solve,
    sde_update,
    singlestep_update,
)
from .grids import logsnr_grid


def dpm_solver_update(
    x: Tensor,
    x0_hats: list[Tensor],
    lam: list[float],
    sigma: tuple[float, float],
    alpha_next: float,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    third_order: str = "exact",
    solver_type: str = "midpoint",
) -> Tensor:
    """Multistep DPM-Solver++ update of order len(x0_hats) in 1..3 (Lu et al. 2022b, Alg. 2 and App. B).

    x0_hats are the newest-last data predictions at times with half-log-SNRs lam[:-1]; lam[-1] is the target's.
    sigma = (sigma at the current time, sigma at the target).

    eta in [0, 1] picks the reverse process: eta = 0 is the probability-flow ODE, eta > 0 the SDE family with
    the same marginals whose exact solution in lambda (step h) is
        x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s int_0^h (1 + eta) e^{-(1 + eta)(h - u)} x0(u) du
              + sigma_s sqrt(1 - e^{-2 eta h}) z,
    At eta = 1 this is the reverse diffusion SDE solved by Lu et al. 2022b's SDE-DPM-Solver++; eta in (0, 1)
    interpolates to the ODE. Expanding x0 in u and integrating exactly gives the ODE's phi functions at
    hh = (1 + eta) h. At eta = 1, order 1 is DDIM with eta = 1 (the ancestral step with the posterior variance);
    for point-mass data (x0_hat exact) every order and eta keeps the exact marginals (both tested).

    Order 3 fits P(u) = c0 + c1 u + c2 u^2 through the three predictions; d1 = h c1 and d2 = h^2 c2 exactly, and
    the exact integral gives + alpha phi_2 d1 - 2 alpha phi_3 d2 (phi_2 = phi_1 / hh + 1, phi_3 = phi_2 / hh - 1/2
    at hh = (1 + eta) h, the same for every eta after substituting v = (1 + eta) u). third_order="reference" uses
    - alpha phi_3 d2, the libraries' coefficient.

    Order 2 (two predictions, d1 = h c1 of the line through them): solver_type="midpoint" adds - 0.5 alpha phi_1 d1
    (Lu et al.'s Alg. 2 and code; diffusers' and k-diffusion's default), "heun" + alpha phi_2 d1, the line integrated
    exactly (diffusers' and k-diffusion's solver_type="heun"; k-diffusion's sample_dpmpp_3m_sde takes this form at
    its second, two-point step). Both are second order; they differ by O(h^3) per step.
    """
    h = lam[-1] - lam[-2]
    hh = (1.0 + eta) * h
    phi_1 = math.expm1(-hh)
    m0 = x0_hats[-1]
    x = (sigma[1] / sigma[0] * math.exp(-eta * h)) * x - (alpha_next * phi_1) * m0
    if len(x0_hats) == 2:  # DPM-Solver++(2M)
        d1_0 = (m0 - x0_hats[-2]) / ((lam[-2] - lam[-3]) / h)
        if solver_type == "heun":
            x = x + (alpha_next * (phi_1 / hh + 1)) * d1_0
        else:
            x = x - (0.5 * alpha_next * phi_1) * d1_0
    elif len(x0_hats) == 3:  # DPM-Solver++(3M)
        r0, r1 = (lam[-2] - lam[-3]) / h, (lam[-3] - lam[-4]) / h
        d1_0, d1_1 = (m0 - x0_hats[-2]) / r0, (x0_hats[-2] - x0_hats[-3]) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = phi_1 / hh + 1
        phi_3 = phi_2 / hh - 0.5
        c2 = 2.0 if third_order == "exact" else 1.0
        x = x + (alpha_next * phi_2) * d1 - (c2 * alpha_next * phi_3) * d2
    if eta > 0:
        x = x + (sigma[1] * math.sqrt(-math.expm1(-2.0 * eta * h))) * randn_like(x, generator)
    return x


def noise_sde_update(
    x: Tensor,
    x_ode: Tensor,
    alpha: tuple[float, float],
    sigma: tuple[float, float],
    eta: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SDE-DPM-Solver, the noise form of the stochastic solvers (Lu et al. 2022b, App.; diffusers' algorithm_type=
    "sde-dpmsolver"), from the same step's ODE result x_ode (`dpm_solver_update` in the noise form at eta = 0).

    In y = x / alpha, sigma~ = sigma / alpha = e^{-lambda}, the SDE family of `dpm_solver_update` reads
    dy = -(1 + eta) sigma~ eps dlambda + noise of variance 2 eta sigma~^2 dlambda. With eps taken as the polynomial
    in lambda (the noise form) there is no linear part left, so the step is exactly (1 + eta) times the ODE's plus
    independent noise of variance eta (sigma~_s^2 - sigma~_t^2):
        x_t = (1 + eta) x_ode - eta (alpha_t / alpha_s) x_s + sigma_t sqrt(eta (e^{2h} - 1)) z,
    at eta = 1 and order 1: x_t = (alpha_t / alpha_s) x_s - 2 sigma_t (e^h - 1) eps + sigma_t sqrt(e^{2h} - 1) z.
    Unlike the data form it does not keep point-mass marginals exactly: eps changes along the noisy path.
    alpha, sigma: (at the current time, at the target), the path's own."""
    h = math.log(alpha[1] / sigma[1]) - math.log(alpha[0] / sigma[0])
    x = (1.0 + eta) * x_ode - (eta * alpha[1] / alpha[0]) * x
    return x + (sigma[1] * math.sqrt(eta * math.expm1(2.0 * h))) * randn_like(x, generator)


def check_dpm_solver_combination(
    prediction: str,
    eta: float,
    method: str = "multistep",
    inner: str = "logsnr",
    order: int = 2,
    solver_type: str = "midpoint",
) -> None:
    """Refuse (ValueError) what has no algorithm here: eta > 0 with Lu et al.'s adaptive solver; ancestral steps
    (eta > 0 with "singlestep", "fast", "adaptive_pid") with inner="t", and singlestep ones of order 3 (their
    intermediate calls could leave the path); method="sde" other than order 2 in the data form's midpoint form; an
    inner spacing without singlestep steps; and an adaptive solver of order 1."""
    if method == "adaptive" and eta != 0:
        raise ValueError(
            f"adaptive DPM-Solver (Lu et al.'s) solves the ODE only; eta must be 0, got {eta!r} (k-diffusion's "
            "ancestral adaptive solver: method='adaptive_pid')"
        )
    if method in ("fast", "adaptive_pid") and eta != 0 and inner != "logsnr":
        raise ValueError(
            f"the ancestral {method} DPM-Solver calls evenly in lambda; inner must be 'logsnr', got {inner!r}"
        )
    if method == "singlestep" and eta != 0 and (order == 3 or inner != "logsnr"):
        raise ValueError(
            f"the ancestral singlestep DPM-Solver (eta = {eta!r}) takes order 1 or 2 with inner='logsnr' (its "
            f"intermediate call halfway to lambda_down stays on the path), got order={order!r}, inner={inner!r}"
        )
    if method == "sde" and (order, prediction, solver_type) != (2, "data", "midpoint"):
        raise ValueError(
            "method='sde' (k-diffusion's DPM++ SDE) is DPM-Solver++(2S): it needs order=2, prediction='data' and "
            f"solver_type='midpoint', got order={order!r}, prediction={prediction!r}, solver_type={solver_type!r}"
        )
    if method in ("adaptive", "adaptive_pid") and order == 1:
        raise ValueError("adaptive DPM-Solver compares orders k and k - 1 (DPM-Solver-12 or -23): order must be 2 or 3")
    if inner != "logsnr" and method in ("multistep", "adaptive", "adaptive_pid"):
        raise ValueError(
            f"inner={inner!r} places a singlestep DPM-Solver's intermediate calls; it needs method='singlestep', "
            "'sde' or 'fast' (adaptive steps place them at 1/2, or 1/3 and 2/3 in lambda)"
        )


def final_order(order: int, i: int, steps: int, lower_order_final: str) -> int:
    """The order of multistep step i of `steps`: warm-up min(order, i + 1), then lowered near the end per
    lower_order_final ("none", "last": at most steps - i, "denoise": at most steps - i + 1)."""
    k = min(order, i + 1)
    if lower_order_final == "last":
        k = min(k, steps - i)
    elif lower_order_final == "denoise":
        k = min(k, steps - i + 1)
    return k


def dpm_solver_sample(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 2,
    eta: float = 0.0,
    third_order: str = "exact",
    solver_type: str = "midpoint",
    lower_order_final: str = "none",
    prediction: str = "data",
    method: str = "multistep",
    inner: str = "logsnr",
    rtol: float = 0.05,
    atol: float = 0.0078,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> Tensor:
    """Multistep DPM-Solver++ of order 1-3 in lambda_t (Lu et al. 2022b, Alg. 2). NFE = steps (+1 denoise).
    `prediction="noise"` is multistep DPM-Solver (noise prediction, Lu et al. 2022a / b; eta > 0: SDE-DPM-Solver,
    `noise_sde_update`).
    `method="singlestep"` takes every step of the grid at `order` with its own intermediate calls (DPM-Solver-k,
    Lu et al. 2022a, Alg. 1 / 2; DPM-Solver++(kS); `samplers/dpm_solver_singlestep.py`): NFE = order x steps
    (+1); lower_order_final and third_order do not apply. `inner` places a singlestep's intermediate calls
    evenly in lambda ("logsnr", the paper's) or in t ("t", Lu et al.'s code on its time_uniform grid). With
    eta > 0 (orders 1-2, inner="logsnr") its steps are ancestral (`dpm_solver_singlestep.ancestral_update`:
    k-diffusion's DPM2 a in the noise form, DPM++ 2S a in the data form). `method="sde"` is k-diffusion's DPM++ SDE
    (`dpm_solver_singlestep.sde_update`; order 2, data form, midpoint form): NFE = 2 x steps (+1).
    `method="fast"` is DPM-Solver-fast (Lu et al. 2022a): singlestep steps of orders 3, ..., 3 then 2 / 1
    that spend exactly `steps` calls (+1), placed by `dpm_solver_singlestep.fast_schedule`; with eta > 0
    k-diffusion's ancestral form, its steps even in lambda between the grid's ends whatever the grid.
    `method="adaptive"` is DPM-Solver-12 (order 2) / DPM-Solver-23 (order 3) with adaptive steps from ts[0] to
    ts[-1] under `rtol` and `atol` (Lu et al. 2022a; `dpm_solver_singlestep.adaptive_solve`); the grid's
    inner times are not used, eta = 0. `method="adaptive_pid"` is the same pair under k-diffusion's PID step
    control in y = x / alpha (its sample_dpm_adaptive; `dpm_solver_singlestep.pid_adaptive_solve`), ancestral
    with eta > 0.

    eta = 0 (default) solves the probability-flow ODE (deterministic); eta > 0 the stochastic SDE-DPM-Solver++
    (see `dpm_solver_update`), which with an imperfect learned score often gives better samples at the same NFE.
    The first steps warm up at lower order (step i uses order min(order, i + 1), as every implementation does).
    `lower_order_final` (see `final_order`): "none" never lowers at the end (k-diffusion; the default: measured
    best at 10 and 20 steps, docs/samplers.md), "last" makes the last step first order and 3M's second-to-last
    second order (Lu et al.'s reference code, which does it below 10 steps), "denoise" counts the final Tweedie
    denoising as that first-order step, so 3M's last step is second order (diffusers' lower_order_final, below 15
    steps, with final_sigmas_type="zero"). `solver_type` picks the two-point step's form ("midpoint" or "heun",
    see `dpm_solver_update`); with order 3 it applies to the warm-up's second step only.
    """
    for key, value in (("order", order), ("eta", eta), ("third_order", third_order), ("solver_type", solver_type)):
        check_option(key, value)
    check_option("lower_order_final", lower_order_final)
    check_option("prediction", prediction)
    check_option("dpm_method", method)
    check_option("inner", inner)
    check_option("rtol", rtol)
    check_option("atol", atol)
    check_dpm_solver_combination(prediction, eta, method, inner, order, solver_type)
    check_grid(sde, ts)
    ts = ts.to(x.device, torch.float64)
    alpha, sigma = sde.marginal(ts)
    lam = sde.logsnr(ts).tolist()
    if prediction == "noise":  # the same update with the roles of (alpha, sigma, lambda, x0_hat) swapped
        alpha, sigma, lam = sigma, alpha, [-v for v in lam]
    sign = 1.0 if prediction == "data" else -1.0  # lambda in the form's variable = sign * sde.logsnr

    def predict(x: Tensor, t: Tensor, factor: float) -> Tensor:
        """x0_hat, or in the noise form eps = -sigma_t score (factor: sigma_t, which the swap keeps in `alpha`)."""
        score = score_fn(x, t)
        return sde.denoise(x, t, score) if prediction == "data" else -factor * score

    if method in ("singlestep", "sde", "fast", "adaptive", "adaptive_pid"):

        def coef(lam_form: float) -> tuple[float, float]:
            a, s = sde.marginal(sde.t_from_logsnr(torch.tensor([sign * lam_form], dtype=torch.float64)))
            return (float(a), float(s)) if prediction == "data" else (float(s), float(a))

        def pred_at(x: Tensor, lam_form: float) -> Tensor:
            t = sde.t_from_logsnr(torch.tensor([sign * lam_form], dtype=torch.float64))
            return predict(x, as_time(float(t), x), coef(lam_form)[0])

        def pred_level(y: Tensor, lam_form: float) -> Tensor:
            """The prediction for the ancestral solvers' state y = x / alpha, at the path's time of lam_form."""
            return pred_at(coef(lam_form)[0 if sign > 0 else 1] * y, lam_form)

        def time_of(lam: float) -> float:
            return float(sde.t_from_logsnr(torch.tensor([lam], dtype=torch.float64)))

        if method == "adaptive_pid":
            ends = sde.logsnr(ts[[0, -1]].cpu()).tolist()
            y, lam_end, _ = pid_adaptive_solve(
                x / float(sde.marginal(ts[:1])[0]), *ends, order, sign, pred_level, rtol, atol, eta,
                lambda: randn_like(x, generator), solver_type,
            )  # fmt: skip
            t_end = time_of(lam_end)
            x = float(sde.marginal(torch.tensor([t_end], dtype=torch.float64))[0]) * y
            if callback is not None:
                callback({"i": 0, "t": ts[-1], "x": x})
            return final_denoise(score_fn, sde, x, t_end, denoise)
        if method == "adaptive":
            x, t_end, _ = adaptive_solve(
                x,
                float(ts[0]),
                float(ts[-1]),
                order,
                solver_type,
                sign,
                lambda t: float(sde.logsnr(torch.tensor([t], dtype=torch.float64))),
                time_of,
                coef,
                pred_at,
                rtol,
                atol,
            )
            if callback is not None:
                callback({"i": 0, "t": ts[-1], "x": x})
            return final_denoise(score_fn, sde, x, t_end, denoise)
        if method == "fast" and eta > 0:  # k-diffusion's ancestral DPM-Solver-fast: its K steps even in lambda
            orders = fast_orders(len(ts) - 1, order)
            outer, inner_times = logsnr_grid(sde, len(orders), float(ts[-1]), float(ts[0])), [None] * len(orders)
        elif method == "fast":
            outer, orders, inner_times = fast_schedule(sde, ts, order)
        else:
            outer, orders, inner_times = ts, [order] * (len(ts) - 1), [None] * (len(ts) - 1)

        def fractions(t_s: float, t_t: float, k: int, times: Tensor | None) -> tuple[float, ...] | None:
            """An order-k step's intermediate points as fractions of it in lambda: at the given times, else None
            (even in lambda) or evenly in t (inner="t")."""
            if k == 1 or (times is None and inner == "logsnr"):
                return None
            if times is None:
                times = torch.tensor([t_s + (t_t - t_s) * j / k for j in range(1, k)], dtype=torch.float64)
            ends = torch.tensor([t_s, t_t], dtype=torch.float64)
            (lam_s, lam_t), inner_lam = sde.logsnr(ends).tolist(), sde.logsnr(times.to(torch.float64).cpu()).tolist()
            return tuple((v - lam_s) / (lam_t - lam_s) for v in inner_lam)

        outer = outer.to(torch.float64)
        lam_outer = (sign * sde.logsnr(outer)).tolist()
        alpha_outer, sigma_outer = (v.tolist() for v in sde.marginal(outer))
        cap = lam_outer[-1] if method == "fast" else None  # fast's ancestral steps stop at the grid's end

        for i, k in enumerate(orders):
            t_s, t_t = float(outer[i]), float(outer[i + 1])
            m0 = predict(x, as_time(t_s, x), sigma_outer[i])
            lam_s, lam_t = lam_outer[i], lam_outer[i + 1]
            if method == "sde" or eta > 0:  # in y = x / alpha, back to x at t_t
                y = x / alpha_outer[i]
                if method == "sde":
                    z = (randn_like(x, generator), randn_like(x, generator)) if eta > 0 else None
                    r = fractions(t_s, t_t, k, None)
                    y = sde_update(y, m0, lam_s, lam_t, pred_level, eta, z, r[0] if r else 0.5)
                else:  # the ancestral singlestep solver
                    noise = randn_like(x, generator)
                    y = ancestral_update(y, m0, lam_s, lam_t, k, solver_type, pred_level, eta, noise, sign, cap)
                x = alpha_outer[i + 1] * y
            else:
                r = fractions(t_s, t_t, k, inner_times[i])
                x = singlestep_update(x, m0, lam_s, lam_t, k, solver_type, coef, pred_at, r)
            if callback is not None:
                callback({"i": i, "t": outer[i + 1], "x": x})
        return final_denoise(score_fn, sde, x, float(outer[-1]), denoise)

    steps, preds = len(ts) - 1, []
    for i in range(steps):
        pred = predict(x, as_time(float(ts[i]), x), float(alpha[i]))
        preds = (preds + [pred])[-order:]
        k = final_order(order, i, steps, lower_order_final)
        ends = (float(sigma[i]), float(sigma[i + 1]))  # the path's alpha in the noise form's swapped roles
        form_eta = eta if prediction == "data" else 0.0
        x_new = dpm_solver_update(
            x,
            preds[-k:],
            lam[i + 1 - k : i + 2],
            ends,
            float(alpha[i + 1]),
            form_eta,
            generator,
            third_order,
            solver_type,
        )
        if prediction == "noise" and eta > 0:  # SDE-DPM-Solver: from the noise form's ODE step
            x_new = noise_sde_update(x, x_new, ends, (float(alpha[i]), float(alpha[i + 1])), eta, generator)
        x = x_new
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    # Final denoising.
    return final_denoise(score_fn, sde, x, float(ts[-1]), denoise)
