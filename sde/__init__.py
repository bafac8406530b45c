"""Gaussian diffusion paths: VP (and its DDPM discretisation), sub-VP, VE (Song et al. 2021), iDDPM's cosine chain,
EDM's sigma(t) = t and the rectified-flow interpolant; any other path is a subclass of `SDE` with `marginal`."""

import inspect

from .base import SDE, ScoreFn, append_dims, as_time, batch_sum, require
from .cosine import CosineVPSDE, cosine_betas
from .discrete import DiscreteChain, DiscreteVPSDE
from .edm import EDMSDE
from .rectified_flow import RectifiedFlow
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE, ddpm_betas

SDES = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": VESDE,
    "ddpm": DiscreteVPSDE,
    "cosine": CosineVPSDE,
    "edm": EDMSDE,
    "rectified_flow": RectifiedFlow,
}


def sde_parameters(name: str) -> list[str]:
    """The constructor's keyword arguments of the path named `name`."""
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; valid names: {sorted(SDES)}")
    return [p for p in inspect.signature(SDES[name].__init__).parameters if p != "self"]


def make_sde(name: str, **kwargs) -> SDE:
    """Build the path named `name` (one of `SDES`); an argument its constructor does not take is an error."""
    valid = sde_parameters(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for the {name!r} SDE; valid: {valid}")
    return SDES[name](**kwargs)


def sde_from_config(cfg: dict) -> SDE:
    """Rebuild an SDE from the plain dict that `SDE.config()` wrote (e.g. from a checkpoint)."""
    cfg = dict(cfg)
    return make_sde(cfg.pop("name"), **cfg)


__all__ = [
    "EDMSDE",
    "SDE",
    "SDES",
    "CosineVPSDE",
    "DiscreteChain",
    "DiscreteVPSDE",
    "RectifiedFlow",
    "ScoreFn",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "append_dims",
    "as_time",
    "batch_sum",
    "cosine_betas",
    "ddpm_betas",
    "make_sde",
    "require",
    "sde_from_config",
    "sde_parameters",
]
