"""Import a diffusers DDPM pipeline (UNet2DModel weights + DDPMScheduler config) into a work dir of ours.

The published CIFAR-10 DDPM (Ho et al. 2020, converted by diffusers) is a UNet2DModel of DownBlock2D /
AttnDownBlock2D / UpBlock2D / AttnUpBlock2D blocks: exactly Ho et al.'s U-Net, which is our models/ddpm.py with
attention after every decoder block (`attn_every_block`). Its weights are renamed module by module, in the order
both networks run them; a 1x1 shortcut convolution and the attention's q/k/v/out linear layers become score_sde's
NIN matrices (transposed). The scheduler's linear betas (beta_start..beta_end over num_train_timesteps) are our
"ddpm" chain with beta_min = N beta_start, beta_max = N beta_end (iDDPM's "squaredcos_cap_v2": our "cosine");
the network sees the 0-based step index N t - 1 (parameterization "ddpm_index").

Read from the pipeline folder (`unet/` and `scheduler/`, as `save_pretrained` writes them) or a folder with the
UNet's config.json and weights: `diffusion_pytorch_model.safetensors` (safetensors, no pickle) or `.bin`
(torch.load weights_only=True). diffusers itself is not needed. A UNet2DModel outside this layout is refused,
naming the option.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from configs.default import get_default_config
from infra.checkpoint import SCORE, CheckpointError, list_checkpoints, save_checkpoint
from infra.io import atomic_write_bytes

from .build import make_net, make_sde_from_config

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# UNet2DModel options that must hold for the network to be Ho et al.'s (name: the value required).
REQUIRED_UNET = {
    "time_embedding_type": "positional", "flip_sin_to_cos": False, "freq_shift": 1, "act_fn": "silu",
    "norm_num_groups": 32, "downsample_padding": 0, "resnet_time_scale_shift": "default", "center_input_sample": False,
    "mid_block_scale_factor": 1, "class_embed_type": None, "num_class_embeds": None, "add_attention": True,
    "downsample_type": "conv", "upsample_type": "conv", "mid_block_type": "UNetMidBlock2D",
}  # fmt: skip
BETA_SCHEDULES = {"linear": "ddpm", "squaredcos_cap_v2": "cosine"}
VARIANCES = {"fixed_small": "posterior", "fixed_large": "forward"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None


def find_pipeline(folder: str | os.PathLike) -> tuple[Path, dict, dict | None]:
    """(weights file, UNet config, scheduler config or None) of a diffusers pipeline or UNet folder."""
    folder = Path(folder)
    unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
    weights = next((unet_dir / n for n in WEIGHT_FILES if (unet_dir / n).is_file()), None)
    if weights is None or not (unet_dir / "config.json").is_file():
        raise CheckpointError(f"{unet_dir} has no UNet2DModel: expected config.json and one of {list(WEIGHT_FILES)}")
    sched = next((p for p in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
                  if p.is_file()), None)  # fmt: skip
    return weights, _read_json(unet_dir / "config.json"), _read_json(sched) if sched else None


def read_weights(path: Path) -> dict:
    """The UNet's state dict: safetensors (no pickle at all) or a .bin read with weights_only=True."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path} is safetensors: pip install safetensors") from None
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused, never retried unsafely
        raise CheckpointError(f"{path} does not load with weights_only=True: {err}") from None


def config_from_diffusers(unet: dict, scheduler: dict | None):
    """Our config for a UNet2DModel config (+ DDPMScheduler config); ValueError naming what does not fit."""
    problems = [f"{k} = {unet.get(k, v)!r} (supported: {v!r})" for k, v in REQUIRED_UNET.items() if unet.get(k, v) != v]
    down, up = list(unet["down_block_types"]), list(unet["up_block_types"])
    bad_types = [t for t in down if t not in ("DownBlock2D", "AttnDownBlock2D")]
    bad_types += [t for t in up if t not in ("UpBlock2D", "AttnUpBlock2D")]
    channels = list(unet["block_out_channels"])
    nf = channels[0]
    if bad_types:
        problems.append(f"block types {bad_types} (supported: DownBlock2D, AttnDownBlock2D, UpBlock2D, AttnUpBlock2D)")
    if [t.startswith("Attn") for t in down] != [t.startswith("Attn") for t in reversed(up)]:
        problems.append(f"attention in down blocks {down} and up blocks {up} at different resolutions")
    if any(c % nf for c in channels):
        problems.append(f"block_out_channels {channels} are not multiples of the first")
    if unet.get("attention_head_dim") not in (None, *channels) and not all(
        unet["attention_head_dim"] == c for c, t in zip(channels, down) if t.startswith("Attn")
    ):
        problems.append(f"attention_head_dim = {unet['attention_head_dim']!r} (supported: one head, None)")
    if unet.get("in_channels") != unet.get("out_channels", unet.get("in_channels")):
        problems.append("in_channels != out_channels")
    if scheduler is not None:
        if scheduler.get("beta_schedule", "linear") not in BETA_SCHEDULES:
            problems.append(
                f"scheduler beta_schedule = {scheduler.get('beta_schedule')!r} (supported: {list(BETA_SCHEDULES)})"
            )
        if scheduler.get("prediction_type", "epsilon") != "epsilon":
            problems.append(f"scheduler prediction_type = {scheduler.get('prediction_type')!r} (supported: 'epsilon')")
    if problems:
        raise ValueError("cannot import this diffusers UNet2DModel: " + "; ".join(problems))
    cfg = get_default_config()
    size = int(unet["sample_size"] if not isinstance(unet["sample_size"], list) else unet["sample_size"][0])
    sched = scheduler or {}
    cfg.sde.name = BETA_SCHEDULES[sched.get("beta_schedule", "linear")]
    cfg.sde.N = int(sched.get("num_train_timesteps", 1000))
    cfg.sde.beta_min = cfg.sde.N * float(sched.get("beta_start", 1e-4))
    cfg.sde.beta_max = cfg.sde.N * float(sched.get("beta_end", 0.02))
    cfg.data.dataset, cfg.data.image_size, cfg.data.num_channels = "cifar10", size, int(unet["in_channels"])
    cfg.data.random_flip = True
    m = cfg.model
    m.name, m.parameterization, m.attn_every_block, m.centered = "ddpm", "ddpm_index", True, True
    m.base_channels, m.channel_mult = nf, tuple(c // nf for c in channels)
    m.num_res_blocks, m.dropout = int(unet["layers_per_block"]), float(unet.get("dropout", 0.0))
    m.attn_resolutions = tuple(size // 2**i for i, t in enumerate(down) if t.startswith("Attn"))
    cfg.sampling.sampler, cfg.sampling.steps = "ancestral", cfg.sde.N
    cfg.sampling.ancestral_variance = VARIANCES.get(sched.get("variance_type", "fixed_small"), "posterior")
    cfg.training.lr, cfg.training.warmup, cfg.training.lr_decay, cfg.training.ema_decay = 2e-4, 5000, "constant", 0.9999
    return cfg


def _module_prefixes(unet: dict) -> list[str]:
    """diffusers' module names in the order our DDPM's all_modules runs them (Ho et al.'s order)."""
    down, up = unet["down_block_types"], unet["up_block_types"]
    layers = int(unet["layers_per_block"])
    names = ["time_embedding.linear_1", "time_embedding.linear_2", "conv_in"]
    for i, kind in enumerate(down):
        for j in range(layers):
            names += [f"down_blocks.{i}.resnets.{j}"] + ([f"down_blocks.{i}.attentions.{j}"] if "Attn" in kind else [])
        if i != len(down) - 1:
            names.append(f"down_blocks.{i}.downsamplers.0.conv")
    names += ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"]
    for i, kind in enumerate(up):
        for j in range(layers + 1):
            names += [f"up_blocks.{i}.resnets.{j}"] + ([f"up_blocks.{i}.attentions.{j}"] if "Attn" in kind else [])
        if i != len(up) - 1:
            names.append(f"up_blocks.{i}.upsamplers.0.conv")
    return names + ["conv_norm_out", "conv_out"]


# Our parameter name inside a module -> (diffusers' name inside it, how the tensor changes).
RESNET = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "Dense_0": "time_emb_proj", "GroupNorm_1": "norm2",
          "Conv_1": "conv2", "NIN_0": "conv_shortcut"}  # fmt: skip
ATTENTION = {"GroupNorm_0": "group_norm", "NIN_0": "to_q", "NIN_1": "to_k", "NIN_2": "to_v", "NIN_3": "to_out.0"}


def _their_tensor(ours: str, module: nn.Module, prefix: str, theirs: dict) -> torch.Tensor:
    """The diffusers tensor for our parameter `ours` (relative name) of `module` under diffusers' `prefix`."""
    head, _, leaf = ours.rpartition(".")
    table = ATTENTION if hasattr(module, "NIN_3") else RESNET if hasattr(module, "Conv_1") else {}
    if head in table:
        key = f"{prefix}.{table[head]}"
    elif head in ("Conv_0", ""):  # a down/upsampling conv (our Conv_0 is their .conv), a Linear, a GroupNorm, a conv
        key = prefix
    else:
        raise KeyError(ours)
    if leaf in ("W", "b"):  # score_sde's NIN: y = x W + b; theirs: a Linear or a 1x1 conv, weight [out, in(, 1, 1)]
        tensor = theirs[f"{key}.{'weight' if leaf == 'W' else 'bias'}"]
        return tensor.reshape(tensor.shape[0], tensor.shape[1]).T if leaf == "W" else tensor
    return theirs[f"{key}.{leaf}"]


def convert_unet_state(net: nn.Module, unet: dict, theirs: dict) -> dict:
    """Our DDPM state dict from a UNet2DModel state dict; CheckpointError listing keys that do not line up."""
    prefixes, modules = _module_prefixes(unet), list(net.all_modules)
    if len(prefixes) != len(modules):
        raise CheckpointError(f"the UNet2DModel has {len(prefixes)} modules in order, our network {len(modules)}")
    state, used, missing = {"sigmas": net.sigmas.clone()}, set(), []
    for index, (module, prefix) in enumerate(zip(modules, prefixes, strict=True)):
        for name, param in module.named_parameters():
            try:
                tensor = _their_tensor(name, module, prefix, theirs)
            except KeyError as err:
                missing.append(f"{prefix} ({name}: {err})")
                continue
            if tuple(tensor.shape) != tuple(param.shape):
                missing.append(f"{prefix} ({name}: shape {tuple(tensor.shape)} vs ours {tuple(param.shape)})")
                continue
            state[f"all_modules.{index}.{name}"] = tensor.to(param.dtype).contiguous()
            used.add(prefix)
    unused = sorted(k for k in theirs if not any(k.startswith(p + ".") for p in used))
    if missing or unused:
        raise CheckpointError(f"UNet2DModel weights do not line up: missing {missing}; unexpected keys {unused}")
    return state


def import_diffusers(folder: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """Write a diffusers DDPM pipeline (or UNet folder) into `workdir` as our checkpoint (step 0); return its path."""
    existing = list_checkpoints(workdir, SCORE)
    if existing:
        raise CheckpointError(
            f"{workdir} already holds checkpoints {[p.name for p in existing]}; import into a new work dir"
        )
    weights, unet, scheduler = find_pipeline(folder)
    cfg = config_from_diffusers(unet, scheduler)
    net, sde = make_net(cfg), make_sde_from_config(cfg)
    state = convert_unet_state(net, unet, read_weights(weights))
    net.load_state_dict(state)  # every key is ours by construction
    cfg_json = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    record = {"step": 0, "config": cfg_json, "sde": sde.config(), "model": state, "ema": state,
              "imported_from": {"format": "diffusers", "file": str(weights)}}  # fmt: skip
    Path(workdir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(workdir) / "config.json", (cfg_json + "\n").encode())
    path = save_checkpoint(workdir, 0, record, keep=1, kind=SCORE)
    logger.info("imported %s (%s chain, N = %d) into %s", weights, cfg.sde.name, cfg.sde.N, path)
    return path
