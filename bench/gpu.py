"""Benchmark for a GPU: DDPM++ at CIFAR-10 size (configs/cifar10_ddpmpp_continuous.py, 61.8M parameters).

Measures, on random CIFAR-shaped data (throughput does not depend on the values):
  * training throughput (images/s) and peak memory of one DSM step (forward, backward, Adam, EMA) at batch 128,
    in fp32, bf16 autocast, and each with torch.compile;
  * sampling throughput at 20 network calls (DPM-Solver++(2M), 19 steps + the final denoising), batch 256;
  * likelihood time per image by the probability-flow ODE (method "exponential", rtol = atol = 1e-4, one Rademacher
    probe), batch 64, with its number of network calls (a freshly initialised network: the calls of a trained one
    differ; see docs/likelihood.md for trained-network figures).
Prints a table and writes bench/results/gpu_<device>.json (or --out).

    python bench/gpu.py --device cuda                 # the full run (a few minutes on one modern GPU)
    python bench/gpu.py --device cpu --tiny           # the CPU smoke size used by the test suite

For reference, score_sde's recipe trains this network 1.3M iterations at batch 128 (166M images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from compose.build import make_score_model  # noqa: E402
from configs.cifar10_ddpmpp_continuous import get_config  # noqa: E402
from likelihood import log_likelihood  # noqa: E402
from losses.dsm import dsm_loss  # noqa: E402
from samplers import run_sampler  # noqa: E402
from training.ema import EMA  # noqa: E402

VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or this process's peak resident set on CPU (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(cfg, device, precision: str, compile: bool):
    model = make_score_model(cfg).to(device)
    model.precision = precision
    if compile:
        model.net = torch.compile(model.net)
    return model


def time_training(cfg, device, precision, compile, batch, warmup, steps) -> dict:
    """Images/s and peak memory of full DSM training steps (forward, backward, clipping, Adam, EMA)."""
    torch.manual_seed(0)
    model = build(cfg, device, precision, compile).train()
    net = model.net
    ema = EMA(getattr(net, "_orig_mod", net), 0.9999)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    x0 = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size, device=device) * 2 - 1

    def step(i):
        t = torch.rand(batch, device=device) * (1 - 1e-5) + 1e-5
        loss = dsm_loss(model, model.sde, x0, t, torch.randn_like(x0)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema.update(getattr(net, "_orig_mod", net), i)

    start = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync(device)
    first = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync(device)
    seconds = time.perf_counter() - start
    return {"train_img_per_s": batch * steps / seconds, "train_peak_mb": peak_memory_mb(device), "warmup_s": first}


@torch.no_grad()
def time_sampling(cfg, device, precision, compile, batch, nfe) -> dict:
    """Images/s of DPM-Solver++(2M) with `nfe` network calls (nfe - 1 steps + the final denoising)."""
    model = build(cfg, device, precision, compile).eval()
    shape = (batch, 3, cfg.data.image_size, cfg.data.image_size)

    def draw():
        noise = model.sde.prior_sampling(shape, generator=torch.Generator(device).manual_seed(0)).to(device)
        return run_sampler("dpm_solver", model.score_fn(), model.sde, noise, steps=nfe - 1)

    draw()  # warm-up (and compilation)
    sync(device)
    start = time.perf_counter()
    draw()
    sync(device)
    return {"sample_img_per_s": batch / (time.perf_counter() - start), "sample_nfe": nfe}


def time_likelihood(cfg, device, batch, tol) -> dict:
    """Seconds per image and network calls of the exponential integrator's bits/dim (fp32, no compile)."""
    model = build(cfg, device, "fp32", False).eval().requires_grad_(False)
    x = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size, device=device) * 2 - 1
    gen = torch.Generator(device).manual_seed(1)
    start = time.perf_counter()
    _, _, calls = log_likelihood(
        model.score_fn(), model.sde, x, rtol=tol, atol=tol, method="exponential", generator=gen
    )
    sync(device)
    return {"likelihood_s_per_image": (time.perf_counter() - start) / batch, "likelihood_calls": int(calls)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="nf 16, 1 block per level, 16x16: a CPU smoke run")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=256)
    parser.add_argument("--likelihood-batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", default="fp32,bf16,fp32+compile,bf16+compile")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cfg = get_config()
    if args.tiny:
        cfg.model.base_channels, cfg.model.num_res_blocks, cfg.data.image_size = 16, 1, 16
        cfg.model.attn_resolutions = (8,)
    rows = []
    for name in args.variants.split(","):
        precision, _, flag = name.partition("+")
        compile = flag == "compile"
        row = {"variant": name, "precision": precision, "compile": compile}
        row |= time_training(cfg, device, precision, compile, args.batch, args.warmup, args.steps)
        row |= time_sampling(cfg, device, precision, compile, args.sample_batch, 20)
        rows.append(row)
        print(json.dumps(row), flush=True)
    likelihood = time_likelihood(cfg, device, args.likelihood_batch, args.tol)
    params = sum(p.numel() for p in make_score_model(cfg).net.parameters())
    record = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "parameters": params,
        "image_size": cfg.data.image_size,
        "batch": args.batch,
        "rows": rows,
        "likelihood": likelihood | {"batch": args.likelihood_batch, "rtol_atol": args.tol},
    }
    print(f"\nDDPM++ ({params:,} parameters, {cfg.data.image_size}x{cfg.data.image_size}) on {record['device']}")
    print("| variant | train img/s | peak MB | sample img/s (20 NFE) |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['train_img_per_s']:.1f} | {r['train_peak_mb']:.0f} | {r['sample_img_per_s']:.1f} |"
        )
    print(f"likelihood: {likelihood['likelihood_s_per_image']:.3f} s/image, {likelihood['likelihood_calls']} calls")
    out = args.out or os.path.join(HERE, "results", f"gpu_{device.type}{'_tiny' if args.tiny else ''}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=2)
    return record


if __name__ == "__main__":
    main()
