"""The ODE integrators one vocabulary names for sampling (samplers/ode.py) and for the likelihood
(likelihood/ode.py): fixed-step Euler, Heun (Heun 1900) and classic RK4 on a grid, and torchdiffeq's adaptive
embedded Runge-Kutta pairs (Dormand & Prince 1980 for dopri5) with rtol / atol."""

FIXED_METHODS = ("euler", "heun", "rk4")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
ODE_METHODS = FIXED_METHODS + ADAPTIVE_METHODS
TORCHDIFFEQ_NAME = {"euler": "euler", "heun": "heun2", "rk4": "rk4", **{m: m for m in ADAPTIVE_METHODS}}


def check_ode_method(method: str) -> None:
    """Raise ValueError naming an unknown ODE method and the valid ones."""
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; valid: {list(ODE_METHODS)}")
