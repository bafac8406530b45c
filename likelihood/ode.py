"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2; Chen et al. 2018).

The probability-flow ODE dx/dt = f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2 carries p_t to p_s for any s, t
(its drift is `sde.reverse(..., probability_flow=True)`). Along a solution, the instantaneous change of
variables (Chen et al. 2018) gives d log p_t(x(t)) / dt = -div f~(x(t), t), so integrating UP from x(t_min) = x:

    log p_{t_min}(x) = log p_T(z) + int_{t_min}^{T} div f~(x(t), t) dt,     z = x(T),

and p_T is replaced by the prior N(0, prior_std^2 I). The divergence is exact (D vector-Jacobian products per
evaluation; small D) or Hutchinson's estimate with K probes drawn once per solve and held fixed along the ODE,
which keeps the integrand a smooth function of t for the adaptive solver. Each probe has its own accumulator, so
one solve returns K unbiased estimates [B, K] whose spread is the Hutchinson error. The integration starts at
t_min > 0 (sigma_0 = 0 for VP-type SDEs makes the score blow up at t = 0) and the solver never evaluates the score
below t_min or above T: torchdiffeq's adaptive steps are forced to land on the end point (`step_t`) rather than
overshoot it.

Integration variable. The same integral can be taken over lambda = `sde.logsnr(t)` = log(alpha_t / sigma_t), with
dx/dlambda = f~ dt/dlambda and dt/dlambda = -2 sigma_t^2 / g_t^2 (every Gaussian path has dlambda/dt =
-g^2 / (2 sigma^2)); t(lambda) is `sde.t_from_logsnr`. For a discrete chain (DDPM's, iDDPM's cosine) beta(t) is
piecewise constant, so f~(x, t) jumps at each i/N and dopri5's error control misjudges the steps, while
f~ dt/dlambda = (x + score) sigma^2 is smooth in lambda. "auto" therefore picks "logsnr" for a path with a
discrete chain (an `N` attribute) and "t" otherwise; the measured errors and NFE are in docs/likelihood.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde import SDE, ScoreFn, append_dims, as_time, require
from sde.ode_methods import ADAPTIVE_METHODS, ODE_METHODS, TORCHDIFFEQ_NAME

from .bpd import check_data
from .divergence import DIVERGENCES, PROBES, draw_probes, exact_divergence, hutchinson_divergence
from .exponential import DEFAULT_ORDER, ORDERS, exponential_log_likelihood

TIME_VARIABLES = ("auto", "t", "logsnr")
EXPONENTIAL = "exponential"
LIKELIHOOD_METHODS = (EXPONENTIAL, *ODE_METHODS)
STATE_DTYPES = {"float32": torch.float32, "float64": torch.float64}
EXPONENTIAL_OPTIONS = ("order", "first_step", "max_calls")


def check_ode_options(
    sde: SDE,
    t_min: float,
    rtol: float,
    atol: float,
    method: str,
    divergence: str,
    probe: str,
    num_probes: int,
    time_variable: str = "auto",
    state_dtype: str | torch.dtype | None = None,
    order: int = DEFAULT_ORDER,
) -> None:
    """Raise ValueError naming the bad option (or what the path lacks) and what is allowed, before any work.
    Draws nothing from any random number generator."""
    require(sde, "coefficients", "logsnr", "prior_std", who="the ODE likelihood")
    if not (isinstance(t_min, int | float) and 0 < t_min < sde.T):
        raise ValueError(f"t_min must lie in (0, T) = (0, {sde.T}), got {t_min!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
            raise ValueError(f"{name} must be a positive finite number, got {tol!r}")
    if method not in LIKELIHOOD_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; valid: {list(LIKELIHOOD_METHODS)}")
    if time_variable not in TIME_VARIABLES:
        raise ValueError(f"unknown time variable {time_variable!r}; valid: {list(TIME_VARIABLES)}")
    resolve_state_dtype(state_dtype)
    if method == EXPONENTIAL and (isinstance(order, bool) or order not in ORDERS):
        raise ValueError(f"order must be one of {list(ORDERS)} for the exponential integrator, got {order!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; valid: {list(DIVERGENCES)}")
    if probe not in PROBES:  # checked by name: validating draws nothing from any RNG
        raise ValueError(f"unknown probe {probe!r}; valid: {sorted(PROBES)}")
    if isinstance(num_probes, bool) or int(num_probes) != num_probes or num_probes < 1:
        raise ValueError(f"num_probes must be an integer >= 1, got {num_probes!r}")


def resolve_state_dtype(state_dtype: str | torch.dtype | None) -> torch.dtype | None:
    """None (the data's dtype), "float32"/"float64" or a torch dtype of those -> torch dtype or None."""
    if state_dtype is None or state_dtype in STATE_DTYPES.values():
        return state_dtype
    if state_dtype in STATE_DTYPES:
        return STATE_DTYPES[state_dtype]
    raise ValueError(f"unknown state dtype {state_dtype!r}; valid: {list(STATE_DTYPES)} (or None: the data's)")


def unread_stages(method: str) -> dict[int, float]:
    """{call index within a step: its stage's fraction of the step} for the stages of torchdiffeq's tableau for
    `method` whose derivative has weight zero in the solution, the error estimate and the dense output (and is not
    the last, first-same-as-last stage). Their accumulator value is never read, so their divergence can be skipped
    without changing a bit of the result: dopri5's second stage (c = 1/5, b = b* = 0; Dormand & Prince 1980; its
    dense output, Shampine 1986, weighs it 0 too), dopri8's stages 2-5.
    {} for a method without such a tableau (or another torchdiffeq layout)."""
    try:
        from torchdiffeq._impl.odeint import SOLVERS

        solver = SOLVERS[TORCHDIFFEQ_NAME[method]]
        tableau, mid = solver.tableau, solver.mid
    except (ImportError, KeyError, AttributeError):
        return {}
    weights = torch.stack([tableau.c_sol, tableau.c_error, mid]).abs().sum(0)  # [stages + 1]; k_0 is f(t0)
    return {i - 1: float(tableau.alpha[i - 1]) for i in range(1, len(weights) - 1) if weights[i] == 0}


STAGE_TOL = 1e-3  # a call is a tableau stage if its time is within this fraction of the step (stages are >= 0.02 apart)


class _ODEFunc:
    """Right-hand side of the augmented ODE (dx/du, d delta/du) = (f~ dt/du, div f~ dt/du per probe) in the
    integration variable u = t, or u = lambda_t with dt/dlambda = -2 sigma_t^2 / g_t^2 (true for every path).
    The state may be float64 while the network sees its own dtype `net_dtype`.

    At the `unread_stages` of the method (located through torchdiffeq's step callback, and only where the call's
    time is the stage's) only the drift is computed, a forward without graph, and the divergence is returned as 0:
    its weight is zero everywhere it could be read. Every other call costs a forward with graph and one VJP per
    probe."""

    def __init__(self, score_fn, sde, divergence, probes, counter, time_variable, t_min, net_dtype, skip):
        self.score_fn, self.sde, self.divergence, self.probes = score_fn, sde, divergence, probes
        self.counter, self.time_variable, self.t_min, self.net_dtype = counter, time_variable, t_min, net_dtype
        self.skip = skip  # {call index within a step: stage fraction}
        self.step = None  # (t0, dt, call index, effective dt) of the step under way

    def callback_step(self, t0: Tensor, y0, dt: Tensor) -> None:
        """torchdiffeq calls this before each step attempt (accepted or not)."""
        self.step = [t0, dt, 0, None]

    def _unread(self, u: Tensor) -> bool:
        """Whether this call is one of the unread stages of the step under way (checked by its time)."""
        if self.step is None:  # torchdiffeq's initial calls, before any step
            return False
        t0, dt, index, dt_eff = self.step
        self.step[2] += 1
        if index not in self.skip:
            return False
        # one host read per step attempt at most (torchdiffeq itself reads dt on the host every step)
        frac = float((u - t0).abs() / dt)  # torchdiffeq reports dt > 0 in either direction of integration
        if dt_eff is None and index == 0 and 0 < frac <= self.skip[0] * (1 + STAGE_TOL):  # dt may shrink onto T
            self.step[3] = dt_eff = frac / self.skip[0]
        return dt_eff is not None and abs(frac - self.skip[index] * dt_eff) <= STAGE_TOL * dt_eff

    def __call__(self, u: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self.counter[0] += 1
        sde, unread = self.sde, self._unread(u)
        with torch.set_grad_enabled(not unread):
            x = state[0].detach().to(self.net_dtype).requires_grad_(not unread)
            t = u if self.time_variable == "t" else sde.t_from_logsnr(u).clamp(self.t_min, sde.T)
            t_vec = as_time(t.to(x.dtype), x)
            drift = sde.reverse(x, t_vec, self.score_fn(x, t_vec), probability_flow=True)[0]  # [B, *D]
            if self.time_variable == "logsnr":
                _, g = sde.sde(x, t_vec)
                drift = drift * append_dims(-2 * sde.marginal(t_vec)[1] ** 2 / g**2, x.ndim)
            if unread:
                div = torch.zeros_like(state[1])
            elif self.divergence == "exact":
                div = exact_divergence(drift, x)  # [B, 1]
            else:
                div = hutchinson_divergence(drift, x, self.probes)  # [B, K]
        return drift.detach().to(state[0].dtype), div.detach().to(state[1].dtype)


def resolve_time_variable(sde: SDE, time_variable: str) -> str:
    """ "auto" -> "logsnr" for a path with piecewise-constant coefficients (a discrete chain of N steps: its
    t-drift jumps N times, which misleads adaptive step control), else "t"."""
    if time_variable not in TIME_VARIABLES:
        raise ValueError(f"unknown time variable {time_variable!r}; valid: {list(TIME_VARIABLES)}")
    if time_variable == "auto":
        return "logsnr" if getattr(sde, "N", None) is not None else "t"
    return time_variable


def log_likelihood_per_probe(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    time_variable: str = "auto",
    options: dict | None = None,
    state_dtype: str | torch.dtype | None = None,
) -> tuple[Tensor, Tensor, int]:
    """log p_{t_min}(x) in nats by the probability-flow ODE, one estimate per probe (Song et al. 2021, Eq. 39).

    Returns (logp [B, K] (K = 1 for the exact divergence), z = x(T) [B, *D], number of score evaluations).
    time_variable: integrate in "t", or in "logsnr" = lambda_t = log(alpha_t / sigma_t) (smooth even for chains),
    or "auto" (see `resolve_time_variable`). `options` go to torchdiffeq (e.g. {"step_size": 0.01} for the
    fixed-grid methods; the step is then in the integration variable).

    method="exponential" (likelihood/exponential.py) is the adaptive exponential multistep integrator built for
    this ODE: `options` {"order": 1..5 (4), "first_step", "max_calls"}; rtol/atol bound each step's error in
    bits/dim (atol + rtol (|log prior(x_n)| + 1) / (D ln 2)); time_variable is its interpolation variable ("auto":
    lambda on every path, measured in docs/likelihood.md). The count returned is network calls (rejected steps
    included); its log p is float64.
    state_dtype: "float64" integrates the state and the accumulator in float64 (the network gets x's dtype).
    """
    options = dict(options or {})
    order = options.get("order", DEFAULT_ORDER)
    check_ode_options(sde, t_min, rtol, atol, method, divergence, probe, num_probes, time_variable, state_dtype, order)
    check_data(x)
    state_dtype = resolve_state_dtype(state_dtype)
    # Probes: drawn once per solve, fixed along the trajectory, one accumulator each.
    probes = None
    if divergence == "hutchinson":
        probes = draw_probes(probe, x.shape, num_probes, generator, x.device, x.dtype)  # [K, B, *D]
    if method == EXPONENTIAL:
        unknown = set(options) - set(EXPONENTIAL_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown options {sorted(unknown)} for method 'exponential'; valid: {list(EXPONENTIAL_OPTIONS)}"
            )
        logp, z, calls = exponential_log_likelihood(
            score_fn,
            sde,
            x,
            t_min,
            probes,
            divergence,
            rtol=rtol,
            atol=atol,
            variable=time_variable,
            state_dtype=state_dtype,
            **options,
        )
        return logp, z, calls
    from torchdiffeq import odeint  # imported here: the option checks and every other mode start without it

    time_variable = resolve_time_variable(sde, time_variable)
    counter = [0]
    skip = unread_stages(method) if method in ADAPTIVE_METHODS else {}
    func = _ODEFunc(score_fn, sde, divergence, probes, counter, time_variable, t_min, x.dtype, skip)
    # Solve from t_min up to T; adaptive steps are forced to land on the end point, never past it.
    ends = torch.tensor([t_min, sde.T], dtype=torch.float64)
    if time_variable == "logsnr":
        ends = sde.logsnr(ends)
    ends = ends.to(x.device, state_dtype or x.dtype)
    if method in ADAPTIVE_METHODS:
        options.setdefault("step_t", ends[1:])
    dtype = state_dtype or x.dtype
    state0 = (
        x.detach().to(dtype),
        torch.zeros(x.shape[0], 1 if probes is None else num_probes, dtype=dtype, device=x.device),
    )
    xs, deltas = odeint(func, state0, ends, rtol=rtol, atol=atol, method=TORCHDIFFEQ_NAME[method], options=options)
    # Change of variables: log p_{t_min}(x) = log prior(z) + int div f~ dt.
    logp = sde.prior_logp(xs[-1])[:, None] + deltas[-1]
    return logp, xs[-1].to(x.dtype), counter[0]


def log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    time_variable: str = "auto",
    options: dict | None = None,
    state_dtype: str | torch.dtype | None = None,
) -> tuple[Tensor, Tensor, int]:
    """log p(x) in nats per example [B] via the probability-flow ODE, with z = x(T) and the NFE (Song et al. 2021).

    The K Hutchinson estimates are averaged; see `log_likelihood_per_probe` for them one by one.
    """
    logp, z, nfe = log_likelihood_per_probe(
        score_fn,
        sde,
        x,
        t_min,
        rtol,
        atol,
        method,
        divergence,
        probe,
        num_probes,
        generator,
        time_variable,
        options,
        state_dtype,
    )
    return logp.mean(1), z, nfe
