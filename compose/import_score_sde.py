"""Import a score_sde_pytorch checkpoint (Song et al. 2021's code) into a work dir of ours that every mode then uses.

Their `checkpoint_*.pth` is a dict: 'model' (the state dict of the nn.DataParallel-wrapped network: 'module.'
prefixes, a float64 buffer 'sigmas'), 'ema' ({'decay', 'num_updates', 'shadow_params'}: the EMA weights in the order
of model.parameters() that require grad, so NCSN++'s fixed Fourier weight is absent and comes from 'model'),
'optimizer' (Adam's state dict, whose lr is a numpy.float64) and 'step'. It is read with
`torch.load(weights_only=True)`, allowing exactly the numpy scalar and dtype types that lr needs; nothing else.
Their ml_collections config (as `config.to_dict()`, e.g. saved as JSON) is translated key by key into ours
(`config_from_score_sde`); or an experiment config of ours (configs/cifar10_*.py) says what the network is.

What is not carried over: Adam's moments (a resumed run starts them afresh; the fixtures of score_sde's format
have none) and their data pipeline's random state. Supported: continuous-time models (training.continuous) on
VP, sub-VP and VE, networks 'ncsnpp' (DDPM++, NCSN++) and 'ddpm'.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from configs.default import get_default_config
from infra.checkpoint import SCORE, CheckpointError, list_checkpoints, save_checkpoint
from infra.io import atomic_write_bytes

from .build import make_net, make_sde_from_config

logger = logging.getLogger(__name__)

PEER_SDES = {"vpsde": "vp", "subvpsde": "subvp", "vesde": "ve"}
PEER_MODELS = ("ncsnpp", "ddpm")
PEER_PREDICTORS = {"euler_maruyama": "euler_maruyama", "reverse_diffusion": "reverse_diffusion",
                   "ancestral_sampling": "ancestral", "none": "none"}  # fmt: skip
PEER_CORRECTORS = {"langevin": "langevin", "ald": "ald", "none": "none"}
# score_sde's option names that are ours too (model section); nf and ch_mult are our base_channels, channel_mult.
SHARED_MODEL_KEYS = (
    "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "conditional", "fir", "fir_kernel",
    "skip_rescale", "resblock_type", "progressive", "progressive_input", "progressive_combine", "embedding_type",
    "fourier_scale", "init_scale", "scale_by_sigma", "nonlinearity",
)  # fmt: skip


def _numpy_safe_globals() -> list:
    """The numpy globals a pickled numpy.float64 needs (numpy 1.x and 2.x spell the scalar's module differently)."""
    names = []
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            names.append(__import__(module, fromlist=["scalar"]).scalar)
            break
        except (ImportError, AttributeError):
            continue
    names.append(np.dtype)
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles the dtype's class
    if dtypes is not None:
        names += [dtypes.Float64DType, dtypes.Float32DType]
    return names


def read_score_sde_checkpoint(path: str | os.PathLike) -> dict:
    """score_sde's checkpoint dict, loaded with weights_only=True and only the numpy types its lr needs allowed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"score_sde checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: refused, never retried unsafely
        raise CheckpointError(f"{path} is not a loadable score_sde checkpoint (weights_only=True): {err}") from None
    missing = [k for k in ("model", "ema", "step") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: not a score_sde checkpoint ('model', 'ema', 'step')")
    return ckpt


def config_from_score_sde(peer: dict):
    """Our config (ConfigDict) for the model score_sde's config dict `peer` (config.to_dict()) describes."""
    pm, pd, pt, ps = peer["model"], peer["data"], peer["training"], peer.get("sampling", {})
    problems = []
    if not pt.get("continuous", False):
        problems.append("training.continuous = False (discrete-time models) is not supported; continuous only")
    if pt.get("sde", "").lower() not in PEER_SDES:
        problems.append(f"training.sde = {pt.get('sde')!r}; supported: {list(PEER_SDES)}")
    if pm.get("name") not in PEER_MODELS:
        problems.append(f"model.name = {pm.get('name')!r}; supported: {list(PEER_MODELS)}")
    if pm.get("normalization", "GroupNorm") != "GroupNorm":
        problems.append(f"model.normalization = {pm.get('normalization')!r}; supported: GroupNorm")
    if problems:
        raise ValueError("cannot import this score_sde model: " + "; ".join(problems))
    cfg = get_default_config()
    sde_name, centered = PEER_SDES[pt["sde"].lower()], bool(pd.get("centered", True))
    unit = 1.0 if centered else 2.0  # [0, 1] data: the same path in [-1, 1] has twice the sigmas
    cfg.sde.name, cfg.sde.N = sde_name, int(pm.get("num_scales", 1000))
    cfg.sde.beta_min, cfg.sde.beta_max = float(pm.get("beta_min", 0.1)), float(pm.get("beta_max", 20.0))
    cfg.sde.sigma_min, cfg.sde.sigma_max = unit * float(pm["sigma_min"]), unit * float(pm["sigma_max"])
    dataset = str(pd.get("dataset", "")).lower()
    cfg.data.dataset = "cifar10"  # the image data set this project reads
    if dataset != "cifar10":
        logger.warning(
            "score_sde data set %r: the work dir's data.dataset is 'cifar10' (set data.* to evaluate)", dataset
        )
    cfg.data.image_size, cfg.data.num_channels = int(pd["image_size"]), int(pd["num_channels"])
    cfg.data.random_flip, cfg.data.dequantize = (
        bool(pd.get("random_flip", True)),
        bool(pd.get("uniform_dequantization", False)),
    )
    m = cfg.model
    m.name, m.parameterization, m.centered = pm["name"], "score_sde", centered
    m.base_channels, m.channel_mult = int(pm["nf"]), tuple(pm["ch_mult"])
    for key in SHARED_MODEL_KEYS:
        if key in pm:
            m[key] = tuple(pm[key]) if isinstance(pm[key], list) else pm[key]
    t = cfg.training
    t.batch_size, t.n_iters, t.ema_decay = int(pt["batch_size"]), int(pt["n_iters"]), float(pm.get("ema_rate", 0.9999))
    t.weighting = "likelihood" if pt.get("likelihood_weighting") else "sigma2"
    optim = peer.get("optim", {})
    t.lr, t.warmup, t.lr_decay = float(optim.get("lr", 2e-4)), int(optim.get("warmup", 5000)), "constant"
    t.beta1, t.grad_clip = float(optim.get("beta1", 0.9)), float(optim.get("grad_clip", 1.0))
    t.weight_decay = float(optim.get("weight_decay", 0.0))
    cfg.sampling.snr = float(ps.get("snr", cfg.sampling.snr))
    cfg.sampling.predictor = PEER_PREDICTORS.get(ps.get("predictor"), cfg.sampling.predictor)
    cfg.sampling.corrector = PEER_CORRECTORS.get(ps.get("corrector"), cfg.sampling.corrector)
    cfg.sampling.n_corrector_steps = int(ps.get("n_steps_each", 1))
    cfg.sampling.steps = cfg.sde.N
    return cfg


def fit_state_dict(net: nn.Module, state: dict, what: str) -> dict:
    """`state` if its keys and shapes are exactly the network's; else CheckpointError listing the differences."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state
              and tuple(state[k].shape) != tuple(own[k].shape)]  # fmt: skip
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{what} does not fit the configured network: missing keys {missing}, unexpected keys {unexpected}, "
            f"shape mismatches {shapes}"
        )
    return {k: v.to(own[k].dtype) for k, v in state.items()}


def ema_state(net: nn.Module, model_state: dict, shadow_params: list) -> dict:
    """The EMA state dict: 'model' with each parameter that requires grad replaced by its shadow, in order."""
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    if len(shadow_params) != len(names):
        raise CheckpointError(
            f"'ema' holds {len(shadow_params)} shadow parameters, the network has {len(names)} trainable ones"
        )
    state = dict(model_state)
    for name, shadow in zip(names, shadow_params, strict=True):
        if tuple(shadow.shape) != tuple(model_state[name].shape):
            raise CheckpointError(
                f"EMA shadow for {name}: shape {tuple(shadow.shape)} vs {tuple(model_state[name].shape)}"
            )
        state[name] = shadow.to(model_state[name].dtype)
    return state


def import_score_sde(checkpoint: str | os.PathLike, workdir: str | os.PathLike, cfg=None, peer_config=None) -> Path:
    """Write score_sde's `checkpoint` into `workdir` as our checkpoint of its step; return its path.

    The network is described by `peer_config` (their config dict, or a JSON file of it) or else by `cfg` (ours).
    Refused before anything is written: a work dir that already has checkpoints, keys or shapes that differ."""
    if peer_config is not None:
        if not isinstance(peer_config, dict):
            peer_config = json.loads(Path(peer_config).read_text())
        cfg = config_from_score_sde(peer_config)
    if cfg is None:
        raise ValueError("import_score_sde needs the network's description: cfg (ours) or peer_config (theirs)")
    existing = list_checkpoints(workdir, SCORE)
    if existing:
        raise CheckpointError(
            f"{workdir} already holds checkpoints {[p.name for p in existing]}; import into a new work dir"
        )
    ckpt = read_score_sde_checkpoint(checkpoint)
    net, sde = make_net(cfg), make_sde_from_config(cfg)
    model_state = fit_state_dict(
        net, {k.removeprefix("module."): v for k, v in ckpt["model"].items()}, f"{checkpoint} 'model'"
    )
    shadow = ckpt["ema"].get("shadow_params") if isinstance(ckpt["ema"], dict) else None
    if shadow is None:
        raise CheckpointError(f"{checkpoint} 'ema' has no 'shadow_params'")
    ema = ema_state(net, model_state, list(shadow))
    step = int(ckpt["step"])
    cfg_json = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    origin = {"format": "score_sde", "file": str(checkpoint), "ema_decay": float(ckpt["ema"].get("decay", 0.0))}
    state = {"step": step, "config": cfg_json, "sde": sde.config(), "model": model_state, "ema": ema}
    state["imported_from"] = origin
    Path(workdir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(workdir) / "config.json", (cfg_json + "\n").encode())
    path = save_checkpoint(workdir, step, state, keep=1, kind=SCORE)
    logger.info("imported %s (step %d, %s on %s) into %s", checkpoint, step, cfg.model.name, cfg.sde.name, path)
    return path
