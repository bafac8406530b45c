"""Likelihoods of score-based models: the probability-flow ODE (Song et al. 2021), the discrete variational bound
(Ho et al. 2020) and bits/dim of dequantised 8-bit data. Sees only `score_fn(x, t)` and an `sde`."""

from .bpd import (
    MODEL_SCALE,
    bits_per_dim,
    check_pixels,
    discrete_bits_per_dim,
    mean_and_stderr,
    probe_stderr,
)
from .divergence import DIVERGENCES, PROBES, draw_probes, exact_divergence, hutchinson_divergence
from .ode import TIME_VARIABLES, check_ode_options, log_likelihood, log_likelihood_per_probe, resolve_time_variable
from .vlb import (
    DECODERS,
    GRIDS,
    VARIANCES,
    bound_grid,
    check_bound_support,
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    vlb_bits_per_dim,
    vlb_terms,
)

__all__ = [
    "DECODERS",
    "DIVERGENCES",
    "GRIDS",
    "MODEL_SCALE",
    "PROBES",
    "TIME_VARIABLES",
    "VARIANCES",
    "bits_per_dim",
    "check_bound_support",
    "check_ode_options",
    "check_pixels",
    "discrete_bits_per_dim",
    "discretized_gaussian_log_likelihood",
    "draw_probes",
    "exact_divergence",
    "gaussian_kl",
    "hutchinson_divergence",
    "log_likelihood",
    "log_likelihood_per_probe",
    "mean_and_stderr",
    "probe_stderr",
    "resolve_time_variable",
    "bound_grid",
    "vlb_bits_per_dim",
    "vlb_terms",
]
