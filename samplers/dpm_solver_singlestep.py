"""Singlestep DPM-Solver-1, -2, -3 (Lu et al. 2022a, Alg. 1 and 2) and DPM-Solver++(2S, 3S) (Lu et al. 2022b):
each step from lambda_s to lambda_t = lambda_s + h makes its own k - 1 intermediate network calls, at lambda_s + r1 h
(r1 = 1/2 for order 2; r1 = 1/3, r2 = 2/3 for order 3: evenly in lambda, the paper's), and forgets them afterwards;
k calls per step. Lu et al.'s code spaces them evenly in the variable of its time grid instead, so on its
time_uniform grid evenly in t (r from the times t_s + (t_t - t_s) j / k): `inner="t"` here.

Written in the data-prediction form (x0_hat, x / sigma moving by int e^{lambda} x0_hat dlambda); the noise form
(eps, x / alpha moving by -int e^{-lambda} eps dlambda) is the same arithmetic with (alpha, sigma, lambda, x0_hat)
replaced by (sigma, alpha, -lambda, eps), as in samplers/dpm_solver.py. The two forms of the correction
(`solver_type`) are Lu et al.'s: "midpoint" (their "dpmsolver" type: DPM-Solver-2's - (1 / 2 r1) alpha phi_1 D and
DPM-Solver-3's + (1 / r2) alpha phi_2 D) and "heun" (their "taylor" type, the Taylor terms integrated exactly:
+ alpha phi_2 D1 - alpha phi_3 D2 with D2 = 2 (D1_1 - D1_0) / (r2 - r1), i.e. 2 phi_3 on h^2 c2: exact at third
order, unlike the multistep libraries' coefficient).

DPM-Solver-fast (Lu et al. 2022a; their code's method="singlestep") spends an exact budget of N calls:
K = N // 3 + 1 steps of orders 3, ..., 3 then (2, 1), (1) or (2) for N mod 3 = 0, 1, 2 (order 2: N / 2 steps of
order 2, or (N - 1) / 2 and one of order 1), the K steps evenly in lambda as in the paper; on another grid of N steps
their code instead takes k grid steps per step of order k, calling at the grid's times (`fast_schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sde import SDE

from .grids import logsnr_grid

Coef = Callable[[float], tuple[float, float]]  # lambda -> (alpha, sigma) in the form's roles
Pred = Callable[[Tensor, float], Tensor]  # (x, lambda) -> the prediction there (one network call)


def singlestep_update(
    x: Tensor,
    m0: Tensor,
    lam_s: float,
    lam_t: float,
    order: int,
    solver_type: str,
    coef: Coef,
    pred: Pred,
    r: tuple[float, ...] | None = None,
) -> Tensor:
    """One singlestep DPM-Solver(++) step of `order` from lam_s to lam_t, given the prediction m0 at lam_s. r: the
    intermediate points' fractions of the step in lambda (default: the paper's 1/2, or 1/3 and 2/3)."""
    return _singlestep(x, m0, lam_s, lam_t, order, solver_type, coef, pred, r, lower=False)[0]


def ancestral_logsnr(lam: float, lam_next: float, eta: float, lam_end: float | None = None) -> tuple[float, float]:
    """The ancestral split of a step from lambda to lambda_next > lambda in the noise level sigma~ = e^{-lambda} of
    y = x / alpha: a deterministic step down to lambda_down, then fresh noise of std `up` in y, with
    up^2 = eta^2 sigma~_next^2 (1 - e^{-2 h}) (eta^2 times the posterior variance of y_next given y, y_0; DDIM's eta
    in y, Song et al. 2021a) and sigma~_down^2 + up^2 = sigma~_next^2 (k-diffusion's get_ancestral_step, eta <= 1).
    Returns (lambda_down, up); at eta = 1 lambda_down = lambda_next + h. With `lam_end`, lambda_down is capped there
    and up made up to sigma~_next again (k-diffusion's DPMSolver.dpm_solver_fast / dpm_solver_adaptive)."""
    frac = eta**2 * -math.expm1(-2.0 * (lam_next - lam))  # up^2 / sigma~_next^2 < 1 for eta <= 1
    lam_down, up = lam_next - 0.5 * math.log1p(-frac), math.exp(-lam_next) * math.sqrt(frac)
    if lam_end is not None and lam_down > lam_end:
        lam_down, up = lam_end, math.sqrt(max(math.exp(-2.0 * lam_next) - math.exp(-2.0 * lam_end), 0.0))
    return lam_down, up


def brownian_pair(z1: Tensor, z2: Tensor, level: float, level_mid: float, level_next: float) -> tuple[Tensor, Tensor]:
    """Normalised increments of one Brownian motion W indexed by the noise level, from `level` to `level_mid` and
    from `level` to `level_next` (the second contains the first), made from two independent N(0, I) draws:
    (W(mid) - W(level)) / sqrt|.| and (W(next) - W(level)) / sqrt|.|, the pair k-diffusion's BrownianTreeNoiseSampler
    returns for sample_dpmpp_sde's two calls."""
    d1, d2 = level - level_mid, level_mid - level_next
    return z1, (math.sqrt(d1) * z1 + math.sqrt(d2) * z2) / math.sqrt(d1 + d2)


def level_coef(sign: float) -> Coef:
    """The form's (alpha, sigma) for y = x / alpha, the state of the ancestral steps: (1, sigma~) in the data form,
    (sigma~, 1) in the noise form, sigma~ = e^{-lambda} (lambda = sign * the form's variable). It needs no time of
    the path, so an ancestral step may land on a lambda_down beyond the path's end (VE's sigma_min)."""
    return (lambda lf: (1.0, math.exp(-lf))) if sign > 0 else (lambda lf: (math.exp(lf), 1.0))


def ancestral_update(
    y: Tensor,
    m0: Tensor,
    lam_s: float,
    lam_t: float,
    order: int,
    solver_type: str,
    pred: Pred,
    eta: float,
    noise: Tensor,
    sign: float = 1.0,
    lam_end: float | None = None,
) -> Tensor:
    """An ancestral singlestep step of y = x / alpha from lam_s to lam_t (the form's variable, sign * lambda): the
    deterministic singlestep step of `order` (1 or 2) down to lambda_down of `ancestral_logsnr`, its intermediate
    call halfway in lambda (at most lambda_t, so on the path), then fresh noise of std `up`. k-diffusion's
    sample_dpm_2_ancestral in the noise form and sample_dpmpp_2s_ancestral in the data form (order 2; diffusers'
    KDPM2AncestralDiscreteScheduler is the first); order 1 is DDIM with the same eta. pred(y, lam): the prediction
    at the path's time of lam for x = alpha y. With `lam_end` (k-diffusion's DPM-Solver-fast and adaptive solver,
    any order) lambda_down stops there and up^2 = sigma~_t^2 - sigma~_down^2, so no call passes lam_end."""
    lam_down, up = ancestral_logsnr(sign * lam_s, sign * lam_t, eta, None if lam_end is None else sign * lam_end)
    return singlestep_update(y, m0, lam_s, sign * lam_down, order, solver_type, level_coef(sign), pred) + up * noise


def sde_update(
    y: Tensor,
    m0: Tensor,
    lam_s: float,
    lam_t: float,
    pred: Pred,
    eta: float,
    z: tuple[Tensor, Tensor] | None,
    r1: float = 0.5,
) -> Tensor:
    """k-diffusion's "DPM++ SDE" step of y = x / alpha (its sample_dpmpp_sde; diffusers' DPMSolverSDEScheduler at
    eta = 1), data form: DPM-Solver++(2S) whose two first-order moves, to the intermediate point lam_s + r1 h and
    to lam_t, are each ancestral (`ancestral_logsnr`), their noises the two nested Brownian increments of
    `brownian_pair` (z: two independent draws, None for eta = 0). At eta = 0 it is singlestep DPM-Solver++(2S) in
    the midpoint form. pred(y, lam) as in `ancestral_update`."""
    coef, h = level_coef(1.0), lam_t - lam_s
    lam_mid = lam_s + r1 * h
    n1, n2 = brownian_pair(*z, math.exp(-lam_s), math.exp(-lam_mid), math.exp(-lam_t)) if z else (0.0, 0.0)
    lam_down, up = ancestral_logsnr(lam_s, lam_mid, eta)
    m1 = pred(singlestep_update(y, m0, lam_s, lam_down, 1, "midpoint", coef, pred) + up * n1, lam_mid)
    lam_down, up = ancestral_logsnr(lam_s, lam_t, eta)
    y_down = singlestep_update(y, m0, lam_s, lam_down, 1, "midpoint", coef, pred)
    return _second_order(y_down, m0, m1, r1, 1.0, lam_down - lam_s, "midpoint") + up * n2


def _second_order(x_t: Tensor, m0: Tensor, m1: Tensor, r1: float, a_t: float, h: float, solver_type: str) -> Tensor:
    """DPM-Solver-2's correction of the first-order x_t by the prediction m1 at lam_s + r1 h (Lu et al. 2022a,
    Alg. 1; "heun": the line through m0 and m1 integrated exactly, their code's "taylor" type)."""
    phi_1 = math.expm1(-h)
    if solver_type == "midpoint":
        return x_t - (0.5 / r1 * a_t * phi_1) * (m1 - m0)
    return x_t + (a_t * (phi_1 / h + 1.0) / r1) * (m1 - m0)


def _singlestep(x, m0, lam_s, lam_t, order, solver_type, coef, pred, r, lower: bool):
    """(x_t of `order`, and with lower=True the order - 1 result from the same calls: DPM-Solver-1 inside
    DPM-Solver-2, DPM-Solver-2 at r1 inside DPM-Solver-3, as DPM-Solver-12 / 23 compare them)."""
    h = lam_t - lam_s
    a_t, s_t = coef(lam_t)
    s_s = coef(lam_s)[1]
    phi_1 = math.expm1(-h)
    x_t = (s_t / s_s) * x - (a_t * phi_1) * m0
    if order == 1:
        return x_t, None
    r1 = r[0] if r else (0.5 if order == 2 else 1.0 / 3.0)
    a_1, s_1 = coef(lam_s + r1 * h)
    m1 = pred((s_1 / s_s) * x - (a_1 * math.expm1(-r1 * h)) * m0, lam_s + r1 * h)
    if order == 2:
        return _second_order(x_t, m0, m1, r1, a_t, h, solver_type), x_t
    r2 = r[1] if r else 2.0 / 3.0
    a_2, s_2 = coef(lam_s + r2 * h)
    phi_12 = math.expm1(-r2 * h)
    phi_22 = phi_12 / (r2 * h) + 1.0
    x_2 = (s_2 / s_s) * x - (a_2 * phi_12) * m0 + (r2 / r1 * a_2 * phi_22) * (m1 - m0)
    m2 = pred(x_2, lam_s + r2 * h)
    phi_2 = phi_1 / h + 1.0
    x_low = _second_order(x_t, m0, m1, r1, a_t, h, solver_type) if lower else None
    if solver_type == "midpoint":
        return x_t + (a_t * phi_2 / r2) * (m2 - m0), x_low
    d1_0, d1_1 = (m1 - m0) / r1, (m2 - m0) / r2
    d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
    d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
    return x_t + (a_t * phi_2) * d1 - (a_t * (phi_2 / h - 0.5)) * d2, x_low


def adaptive_solve(
    x: Tensor,
    t_start: float,
    t_end: float,
    order: int,
    solver_type: str,
    sign: float,
    logsnr: Callable[[float], float],
    t_from_logsnr: Callable[[float], float],
    coef: Coef,
    pred: Pred,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    theta: float = 0.9,
    t_err: float = 1e-5,
) -> tuple[Tensor, float, int]:
    """DPM-Solver-12 (order 2) / DPM-Solver-23 (order 3) with adaptive steps in lambda (Lu et al. 2022a;
    their code's dpm_solver_adaptive): each try from lambda_s makes `order` calls (the first one reused
    after a rejection), giving DPM-Solver-k and its embedded DPM-Solver-(k - 1); E = the largest per-sample RMS of
    (x_k - x_{k-1}) / max(atol, rtol max(|x_{k-1}|, |x_prev|)); the step is accepted if E <= 1, and the next h is
    min(theta h E^(-1/k), lambda_end - lambda_s). `sign` maps lambda to the form's variable (-1: noise form).
    Returns (x at t_end, the last time reached, the number of prediction calls); a non-finite error estimate or a
    step below 1e-10 in lambda raises FloatingPointError instead of looping."""
    lam_s, lam_end = logsnr(t_start), logsnr(t_end)
    t_s, h, x_prev, m0, calls = t_start, h_init, x, None, 0

    def counted(z: Tensor, lam_form: float) -> Tensor:
        nonlocal calls
        calls += 1
        return pred(z, lam_form)

    while abs(t_s - t_end) > t_err:
        t_t = t_from_logsnr(lam_s + h)
        lam_t = logsnr(t_t)
        if m0 is None:
            m0 = counted(x, sign * lam_s)
        x_high, x_low = _singlestep(x, m0, sign * lam_s, sign * lam_t, order, solver_type, coef, counted, None, True)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        err = float(((x_high - x_low) / delta).flatten(1).pow(2).mean(1).sqrt().max())
        if not math.isfinite(err):
            raise FloatingPointError(f"adaptive DPM-Solver: non-finite error estimate from t = {t_s:.6g}")
        if h < 1e-10:
            raise FloatingPointError(f"adaptive DPM-Solver: the step underflowed at t = {t_s:.6g}; loosen rtol / atol")
        if err <= 1.0:
            x, x_prev, m0, t_s, lam_s = x_high, x_low, None, t_t, lam_t
        h = min(theta * h * err ** (-1.0 / order) if err > 0 else math.inf, lam_end - lam_s)
    return x, t_s, calls


def pid_adaptive_solve(
    y: Tensor,
    lam_start: float,
    lam_end: float,
    order: int,
    sign: float,
    pred: Pred,
    rtol: float = 0.05,
    atol: float = 0.0078,
    eta: float = 0.0,
    noise: Callable[[], Tensor] | None = None,
    solver_type: str = "midpoint",
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    max_rejections: int = 1000,
) -> tuple[Tensor, float, int]:
    """k-diffusion's adaptive DPM-Solver (its sample_dpm_adaptive: DPM-Solver-12 / -23 under its own PID step-size
    controller), on y = x / alpha from lambda = lam_start to lam_end (the form's variable is sign * lambda;
    k-diffusion's is the noise form, sign = -1).

    Each try from lam_s to t = min(lam_end, lam_s + h) gives DPM-Solver-k and its embedded k - 1 (`solver_type`;
    k-diffusion's is the midpoint form; with eta > 0 both go down to `ancestral_logsnr`'s lambda_down, capped at
    lam_end). The error is the RMS over the whole batch of (y_k - y_{k-1}) / max(atol, rtol max(|y_{k-1}|,
    |y_prev|)); the controller (b1 = (p + i + d) / q, b2 = -(p + 2 d) / q, b3 = d / q with q = order, or 1.5 with
    eta > 0) turns the last three inverse errors into a factor, limits it by 1 + atan(factor - 1), accepts the try
    if it is >= accept_safety, and multiplies h by it either way. An accepted try adds the ancestral noise
    (`noise()`: one draw) and moves on, until lam_end is within 1e-5. The prediction at lam_s is kept after a
    rejection (k-diffusion computes it again: same steps, fewer calls).
    Returns (y reached, the lam reached, calls); a non-finite error, a step below 1e-10 or more than
    `max_rejections` rejected tries (a tolerance float64 cannot meet: the error rounds to 0 on tiny steps, which are
    then accepted) raises FloatingPointError."""
    coef = level_coef(sign)
    b1, b2, b3 = ((pcoeff + icoeff + dcoeff), -(pcoeff + 2.0 * dcoeff), dcoeff)
    q = 1.5 if eta > 0 else order
    b1, b2, b3 = b1 / q, b2 / q, b3 / q
    lam_s, h, y_prev, m0, calls, errs, rejected = lam_start, abs(h_init), y, None, 0, [], 0

    def counted(z: Tensor, lam_form: float) -> Tensor:
        nonlocal calls
        calls += 1
        return pred(z, lam_form)

    while lam_s < lam_end - 1e-5:  # in lambda; the form's variable is sign * lambda
        lam_t = min(lam_end, lam_s + h)
        lam_to, up = ancestral_logsnr(lam_s, lam_t, eta, lam_end) if eta > 0 else (lam_t, 0.0)
        if m0 is None:
            m0 = counted(y, sign * lam_s)
        y_high, y_low = _singlestep(y, m0, sign * lam_s, sign * lam_to, order, solver_type, coef, counted, None, True)
        delta = torch.clamp(rtol * torch.maximum(y_low.abs(), y_prev.abs()), min=atol)
        err = float(torch.linalg.vector_norm((y_low - y_high) / delta)) / math.sqrt(y.numel())
        if not math.isfinite(err):
            raise FloatingPointError(f"adaptive DPM-Solver (PID): non-finite error estimate from lambda = {lam_s:.6g}")
        inv = 1.0 / (err + 1e-8)
        errs = errs or [inv, inv, inv]
        errs[0] = inv
        factor = 1.0 + math.atan(errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3 - 1.0)
        if factor >= accept_safety:
            errs[2], errs[1] = errs[1], errs[0]
            y_prev, m0, lam_s = y_low, None, lam_t
            y = y_high + up * noise() if eta > 0 else y_high
        else:
            rejected += 1
        h *= factor
        if h < 1e-10 or rejected > max_rejections:  # k-diffusion's loop would go on (steps so small the error is 0)
            raise FloatingPointError(
                f"adaptive DPM-Solver (PID): the step underflowed at lambda = {lam_s:.6g} ({rejected} rejected tries); "
                "loosen rtol / atol"
            )
    return y, lam_s, calls


def fast_orders(calls: int, order: int) -> list[int]:
    """DPM-Solver-fast's step orders for a budget of `calls` network calls at most `order` (Lu et al. 2022a;
    their get_orders_and_timesteps_for_singlestep_solver): sum(orders) == calls."""
    if order == 3:
        k = calls // 3 + 1
        tail = {0: [2, 1], 1: [1], 2: [2]}[calls % 3]
        return [3] * (k - len(tail)) + tail
    if order == 2:
        return [2] * (calls // 2) + [1] * (calls % 2)
    return [1] * calls


def fast_schedule(sde: SDE, ts: Tensor, order: int) -> tuple[Tensor, list[int], list[Tensor | None]]:
    """DPM-Solver-fast's steps on the grid ts of N = len(ts) - 1 calls (Lu et al. 2022a): (outer times [K + 1],
    orders [K], each step's intermediate times or None). On a grid even in lambda (the paper's, `grids.logsnr_grid`)
    its K steps are even in lambda from ts[0] to ts[-1], their intermediate calls even in lambda within each (None);
    on any other grid a step of order k takes the next k steps of the grid, calling at the grid's own times in
    between (Lu et al.'s code on its time_uniform and time_quadratic grids, and diffusers' DPMSolverSinglestep-
    Scheduler)."""
    orders = fast_orders(len(ts) - 1, order)
    lam = sde.logsnr(ts.to(torch.float64))
    steps = lam[1:] - lam[:-1]
    if torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-5, atol=0.0):  # also float32-rounded lambdas
        return logsnr_grid(sde, len(orders), float(ts[-1]), float(ts[0])), orders, [None] * len(orders)
    ends, inner = [0], []
    for k in orders:
        inner.append(ts[ends[-1] + 1 : ends[-1] + k])
        ends.append(ends[-1] + k)
    return ts[ends], orders, inner
