"""SDEs of score-based diffusion: VP (and its DDPM discretisation), sub-VP and VE (Song et al. 2021)."""

from .base import SDE, ScoreFn, append_dims, as_time, batch_sum
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE, DiscreteVPSDE, ddpm_betas

SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "ddpm": DiscreteVPSDE}


def make_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by name from `SDES`, passing only the keyword arguments its constructor takes."""
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; valid names: {sorted(SDES)}")
    cls = SDES[name]
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in params})


def sde_from_config(cfg: dict) -> SDE:
    """Rebuild an SDE from the plain dict that `SDE.config()` wrote (e.g. from a checkpoint)."""
    cfg = dict(cfg)
    return make_sde(cfg.pop("name"), **cfg)


__all__ = [
    "SDE",
    "SDES",
    "DiscreteVPSDE",
    "ScoreFn",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "append_dims",
    "as_time",
    "batch_sum",
    "ddpm_betas",
    "make_sde",
    "sde_from_config",
]
