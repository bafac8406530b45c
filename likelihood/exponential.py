"""Exact log-likelihood by an adaptive exponential multistep integrator of the probability-flow ODE.

In lambda = log(alpha_t / sigma_t) (`sde.logsnr`) the probability-flow ODE of every Gaussian path is semi-linear
(Lu et al. 2022, DPM-Solver, Eq. 3.4; Zhang & Chen 2023, DEIS):

    dx/dlambda = (dlog alpha / dlambda) x - sigma eps(x, lambda),     eps = -sigma score,

so its linear part integrates exactly, d(x/alpha)/dlambda = -e^{-lambda} eps, and only eps needs a polynomial:

    x_{n+1} / alpha_{n+1} = x_n / alpha_n - sum_j w_j eps_j,   w_j = int_{lambda_n}^{lambda_{n+1}} e^{-lambda} L_j,

L_j the Lagrange basis through the last k nodes in an interpolation variable tau (variable-step exponential
Adams-Bashforth of order k; Hochbruck & Ostermann 2010; DEIS, Zhang & Chen 2023). tau = lambda with eps
interpolated (the default, `resolve_variable`), or tau = t with the score interpolated and sigma moved into the
weights (the score is smooth as t -> 0 for smooth data, eps ~ sqrt(t) is not). The weights are exact to rounding
(16-point Gauss-Legendre in lambda of a smooth integrand). The noise form has no cancellation in this direction
(data to noise: x / alpha grows).

The divergence of the right-hand side is D dlog alpha/dlambda - sigma div eps: its linear part integrates in closed
form, so along x(lambda) from lambda_0 = lambda(t_min) to lambda_N = lambda(T)

    delta = int div(dx/dlambda) dlambda = D log(alpha_N / alpha_0) + int_{lambda_0}^{lambda_N} psi dlambda,
    psi = sigma^2 div score,

and psi, taken by Hutchinson's estimator (or exactly) on the same network call as eps, is integrated by a
composite rule on the nodes (the degree-5 polynomial in tau through the six nearest nodes, per interval).
One call (a forward pass plus K vector-Jacobian products) per node; log p_{t_min}(x) = log prior(z) + delta.

Step control: after each step the new node's eps gives the Adams-Moulton corrector of the same order; the state
moves on with the corrector (PEC, as UniPC does) and the predictor-corrector difference dx is the error estimate.
What a local error costs in the answer is known: log p_tau(x(tau)) = log p_T(z) + (the rest of the integral),
so an error dx at tau changes the estimate by score . dx nats to first order. The controller keeps
|score . dx| + the accumulator's local error (rules through k vs k + 1 nodes) below atol + rtol L / (D ln 2)
bits/dim per example and step, L = |log prior(x_n)| + 1 standing for the size of log p; a step above it is
retried shorter (its call is counted). No step is longer than MAX_STEP_LOGSNR in lambda (in either variable).
The next step size comes from Gustafsson's PI controller (`step_factor`), which reads the last two accepted errors
and so keeps the step ratios smooth; a multistep method's error constants grow when the ratios oscillate.
The accumulator is float64; `state_dtype=torch.float64` keeps the state in float64 too (the network gets its own
dtype).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sde import SDE, ScoreFn, as_time, batch_sum

from .divergence import exact_divergence, hutchinson_divergence

ORDERS = (1, 2, 3, 4, 5)
DEFAULT_ORDER = 4
VARIABLES = ("auto", "t", "logsnr")
QUADRATURE_POINTS = 6
LN2 = math.log(2)
# The longest step in lambda. Gaussian data's transitions 1 / (1 + c e^{2 lambda}) have their poles pi/2 off the real
# lambda axis whatever the variance c, so a polynomial step much longer than that extrapolates where its error
# estimate means nothing: without the cap, steps of 3-6 in lambda were accepted at the data end of sub-VP and EDM's
# path, where the accumulator's integrand decays like e^{-2 lambda}, and cost 50x the tolerance
# (tests/test_likelihood_exponential.py). Trained MNIST models never step that far (no call more or less there).
MAX_STEP_LOGSNR = 1.0
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
# Step-size control (Gustafsson 1991, "Control theoretic techniques for stepsize selection in explicit Runge-Kutta
# methods", ACM TOMS 17; Hairer & Wanner II, Sec. IV.2): after an accepted step that follows an accepted step,
# h *= SAFETY err_n^(-PI_GAINS[0]/(k+1)) err_{n-1}^(PI_GAINS[1]/(k+1)); otherwise the one-error (I) controller
# h *= SAFETY err_n^(-1/(k+1)). Never a larger step right after a rejection; the factor stays in STEP_FACTOR_RANGE.
# Against the I controller alone (measured in docs/likelihood.md, "Step-size control"): a third of the rejected steps
# and smaller errors at equal tolerance everywhere; at equal calls more accurate on the VP MNIST model, less on EDM's.
PI_GAINS = (0.7, 0.4)
SAFETY = 0.9
STEP_FACTOR_RANGE = (0.2, 5.0)


def step_factor(err: float, err_prev: float | None, k: int, after_rejection: bool) -> float:
    """The next step over this one: err is this step's error over its bound (> 1: rejected), err_prev the last
    accepted step's (None before the first), k the order (the local error is O(h^(k+1)))."""
    err = max(err, 1e-10)
    if err > 1.0 or err_prev is None:
        factor = SAFETY * err ** (-1.0 / (k + 1))
    else:
        factor = SAFETY * err ** (-PI_GAINS[0] / (k + 1)) * max(err_prev, 1e-10) ** (PI_GAINS[1] / (k + 1))
    if after_rejection:
        factor = min(factor, 1.0)
    return min(STEP_FACTOR_RANGE[1], max(STEP_FACTOR_RANGE[0], factor))


class _Variable:
    """The interpolation variable tau on [tau(t_min), tau(T)] and its map to (lambda, t), float64 on the host."""

    def __init__(self, sde: SDE, kind: str, t_min: float):
        self.sde, self.kind, self.t_min = sde, kind, t_min
        ends = sde.logsnr(torch.tensor([t_min, sde.T], dtype=torch.float64)).tolist()
        self.start, self.end = (t_min, float(sde.T)) if kind == "t" else ends
        self._interval = None  # (lam_a, lam_b) -> Gauss-Legendre nodes, weights, tau and sigma there (last one)

    def point(self, tau: float) -> tuple[float, float, float, float]:
        """(lambda, t, alpha, sigma) at tau (exact at the end points)."""
        if tau == self.start or tau == self.end:
            t = self.t_min if tau == self.start else float(self.sde.T)
        else:
            t = tau if self.kind == "t" else float(self.sde.t_from_logsnr(torch.tensor([tau], dtype=torch.float64)))
            t = min(max(t, self.t_min), float(self.sde.T))
        alpha, sigma = self.sde.marginal(torch.tensor([t], dtype=torch.float64))
        return math.log(float(alpha) / float(sigma)), t, float(alpha), float(sigma)

    def at_logsnr(self, lam: float) -> float:
        """tau at lambda, inside [t_min, T]."""
        if self.kind == "logsnr":
            return lam
        t = float(self.sde.t_from_logsnr(torch.tensor([lam], dtype=torch.float64)))
        return min(max(t, self.t_min), float(self.sde.T))

    def _gauss_legendre(self, lam_a: float, lam_b: float):
        """(lambda, weights, tau(lambda), sigma(lambda)) at the 16 Gauss-Legendre nodes of [lam_a, lam_b]: computed
        once per interval (a step asks for four sets of weights on the same one)."""
        if self._interval is None or self._interval[0] != (lam_a, lam_b):
            lam = (lam_a + lam_b) / 2 + (lam_b - lam_a) / 2 * _GL_NODES
            t = self.sde.t_from_logsnr(torch.as_tensor(lam))
            sigma = self.sde.marginal(t)[1].numpy()
            tau = lam if self.kind == "logsnr" else t.numpy()
            self._interval = ((lam_a, lam_b), (lam, (lam_b - lam_a) / 2 * _GL_WEIGHTS, tau, sigma))
        return self._interval[1]

    def weights(
        self, nodes, a: float, b: float, lam_a: float, lam_b: float, rate: float, times_sigma: bool = False
    ) -> np.ndarray:
        """int_{lam_a}^{lam_b} e^{rate lambda} [sigma(lambda)] L_j(tau(lambda)) dlambda for the Lagrange basis
        through `nodes` (tau), the interval being [a, b] in tau: 16-point Gauss-Legendre in lambda, tau(lambda)
        exact (the integrand is smooth, so this is exact to rounding on the step sizes used)."""
        lam, gl_weight, tau, sigma = self._gauss_legendre(lam_a, lam_b)
        weight = gl_weight * np.exp(rate * lam) * (sigma if times_sigma else 1.0)
        tau = np.clip(tau, min(a, b), max(a, b))
        nodes = np.asarray(nodes, dtype=np.float64)
        out = np.empty(len(nodes))
        for j, tj in enumerate(nodes):
            basis = np.ones_like(tau)
            for m, tm in enumerate(nodes):
                if m != j:
                    basis *= (tau - tm) / (tj - tm)
            out[j] = np.sum(weight * basis)
        return out


def resolve_variable(sde: SDE, variable: str) -> str:
    """ "auto" -> "logsnr" on every path. Measured (docs/likelihood.md): on trained MNIST models lambda needed
    1.4x fewer calls than t on rectified flow at equal error (t_min resolves the rough small-noise end), on the
    DDPM/cosine chains t has kinks; only the smooth analytic VP / sub-VP Gaussians preferred t (by 15-40 %)."""
    if variable not in VARIABLES:
        raise ValueError(f"unknown interpolation variable {variable!r}; valid: {list(VARIABLES)}")
    return "logsnr" if variable == "auto" else variable


def _combine(weights: np.ndarray, values: list[Tensor]) -> Tensor:
    """sum_j weights[j] values[j] (host float64 weights, tensors of one shape)."""
    total = float(weights[0]) * values[0]
    for wj, v in zip(weights[1:], values[1:], strict=True):
        total = total + float(wj) * v
    return total


def _evaluate(score_fn, x: Tensor, t: float, net_dtype, probes, divergence) -> tuple[Tensor, Tensor]:
    """(score in the state's dtype, div score per probe [B, K] float64): one network call."""
    with torch.enable_grad():
        xin = x.detach().to(net_dtype).requires_grad_(True)
        score = score_fn(xin, as_time(t, xin))
        div = exact_divergence(score, xin) if divergence == "exact" else hutchinson_divergence(score, xin, probes)
    return score.detach().to(x.dtype), div.detach().double()


def _quadrature(var: _Variable, taus: list[float], lams: list[float], psis: list[Tensor], n_int: int) -> Tensor:
    """int psi dlambda over the first n_int intervals of the nodes (the last may have no psi: extrapolated), each
    by the polynomial in tau through the QUADRATURE_POINTS nearest nodes that have psi."""
    total = torch.zeros_like(psis[0])
    have = len(psis)
    for i in range(n_int):
        lo = min(max(i + 1 - QUADRATURE_POINTS // 2, 0), max(have - QUADRATURE_POINTS, 0))
        idx = list(range(lo, min(lo + QUADRATURE_POINTS, have)))
        w = var.weights([taus[j] for j in idx], taus[i], taus[i + 1], lams[i], lams[i + 1], 0.0)
        total = total + _combine(w, [psis[j] for j in idx])
    return total


def exponential_log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t_min: float,
    probes: Tensor | None,
    divergence: str = "hutchinson",
    order: int = DEFAULT_ORDER,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    variable: str = "auto",
    state_dtype: torch.dtype | None = None,
    first_step: float = 1e-4,
    max_calls: int = 10_000,
) -> tuple[Tensor, Tensor, int]:
    """(log p_{t_min}(x) [B, K] nats (float64), z = x(T) [B, *D], network calls) by the adaptive exponential
    multistep method above. `first_step`: the first step as a fraction of the interval (the controller grows it
    at most 5x per step, `step_factor`); `variable`: see `resolve_variable`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if not (isinstance(first_step, int | float) and 0 < first_step <= 1):
        raise ValueError(f"first_step must be a fraction of the interval in (0, 1], got {first_step!r}")
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 2:
        raise ValueError(f"max_calls must be an integer >= 2, got {max_calls!r}")
    var = _Variable(sde, resolve_variable(sde, variable), t_min)
    # The interpolated quantity v: eps = -sigma score in lambda; in t the score itself (smooth as t -> 0, where
    # sigma ~ sqrt(t) is not), the factor sigma moving into the weights. Either way x/alpha -= sum_j w_j v_j.
    in_t = var.kind == "t"

    def quantity(score: Tensor, sigma: float) -> Tensor:
        return -score if in_t else -sigma * score

    def step(nodes, values, tau_i, tau_n, lam_i, lam_n, scale, alpha_n):
        w = var.weights(nodes, tau_i, tau_n, lam_i, lam_n, -1.0, times_sigma=in_t)
        return state * scale - alpha_n * _combine(w, values)

    net_dtype = x.dtype
    state = x.detach().to(state_dtype or x.dtype)
    num_dims = x[0].numel()
    span = var.end - var.start
    lam, t, alpha, sigma = var.point(var.start)
    alpha0 = alpha
    score, div = _evaluate(score_fn, state, t, net_dtype, probes, divergence)
    taus, lams, vals, psis = [var.start], [lam], [quantity(score, sigma)], [sigma**2 * div]
    calls, h = 1, first_step * span
    err_prev, rejected = None, False  # the last accepted step's error; whether the last try was rejected
    while taus[-1] != var.end:
        if calls >= max_calls:
            raise RuntimeError(
                f"the likelihood ODE needed more than {max_calls} network calls (rtol={rtol}, atol={atol})"
            )
        tau_i, lam_i = taus[-1], lams[-1]
        last = (tau_i + h - var.end) * span >= -1e-12 * abs(span)
        tau_n = var.end if last else tau_i + h
        lam_n, t_n, alpha_n, sigma_n = var.point(tau_n)
        if abs(lam_n - lam_i) > MAX_STEP_LOGSNR:
            tau_n = var.at_logsnr(lam_i + math.copysign(MAX_STEP_LOGSNR, lam_n - lam_i))
            lam_n, t_n, alpha_n, sigma_n = var.point(tau_n)
        k = min(order, len(taus))
        scale = alpha_n / alpha
        pred = step(taus[-k:], vals[-k:], tau_i, tau_n, lam_i, lam_n, scale, alpha_n)  # Adams-Bashforth
        score_n, div_n = _evaluate(score_fn, pred, t_n, net_dtype, probes, divergence)
        calls += 1
        val_n, psi_n = quantity(score_n, sigma_n), sigma_n**2 * div_n
        nodes_c = [*taus[len(taus) - k + 1 :], tau_n]
        corr = step(nodes_c, [*vals[len(vals) - k + 1 :], val_n], tau_i, tau_n, lam_i, lam_n, scale, alpha_n)
        # The accumulator over this step: the rules through the new node and the last k - 1 or k old ones.
        m = min(k, len(taus))
        q_lo, q_hi = (
            _combine(var.weights(nodes, tau_i, tau_n, lam_i, lam_n, 0.0), [*psis[len(psis) - j :], psi_n])
            for nodes, j in ((nodes_c, k - 1), ([*taus[len(taus) - m :], tau_n], m))
        )
        nats = (batch_sum((score_n * (corr - pred)).double())[:, None] + (q_hi - q_lo)).abs()
        bpd_scale = (sde.prior_logp(pred.double())[:, None].abs() + 1.0) / (num_dims * LN2)  # |log p|'s scale
        err = float((nats / (num_dims * LN2) / (atol + rtol * bpd_scale)).max())
        h = (tau_n - tau_i) * step_factor(err, err_prev, k, after_rejection=rejected)
        rejected = err > 1.0
        if rejected:
            continue
        err_prev = err
        state, alpha = corr, alpha_n
        taus.append(tau_n)
        lams.append(lam_n)
        vals = [*vals[1 - order :], val_n] if order > 1 else [val_n]
        psis.append(psi_n)
    delta = num_dims * math.log(alpha / alpha0) + _quadrature(var, taus, lams, psis, len(taus) - 1)
    logp = sde.prior_logp(state.double())[:, None] + delta
    return logp, state.to(net_dtype), calls
