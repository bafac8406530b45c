"""The MNIST configs of the new paths (iDDPM's cosine chain, EDM, rectified flow) run end to end at a tiny size:
a few training steps of a small U-Net on MNIST-format files, then every sampler of `--mode sample` and
`--mode eval`'s ODE bits/dim and bound, all finite. The recipes' full-size figures are in docs/paths.md."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from compose.checkpoints import load_score_model

RECIPES = ["cosine_mnist", "edm_mnist", "rectified_flow_mnist"]


def _write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x803 if array.ndim == 3 else 0x801
    path.write_bytes(
        magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    )


def tiny(recipe: str, root) -> object:
    cfg = importlib.import_module(f"configs.{recipe}").get_config()
    cfg.data.source, cfg.data.root, cfg.eval.data_root = "idx", str(root), str(root)
    m, t = cfg.model, cfg.training
    m.base_channels, m.channel_mult, m.num_res_blocks, m.attn_resolutions = 8, (1, 2), 1, ()
    t.n_iters, t.batch_size, t.warmup, t.checkpoint_every, t.snapshot_every, t.log_every = 4, 8, 1, 2, 0, 2
    cfg.eval.num_images, cfg.eval.batch_size, cfg.eval.rtol, cfg.eval.atol = 4, 4, 1e-2, 1e-2
    cfg.eval.bound_steps = 10
    cfg.sampling.num_samples = cfg.sampling.batch_size = 4
    return cfg


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 16), ("t10k", 8)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return root


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_samples_with_every_sampler_and_evaluates(recipe, digits, tmp_path):
    from compose.validate import validate_config
    from evaluation.evaluate import run_eval
    from evaluation.sample import run_sampling
    from training.loop import train

    cfg = tiny(recipe, digits)
    validate_config(cfg, "train", str(tmp_path))
    train(cfg, tmp_path)
    model, stored = load_score_model(tmp_path)
    assert model.sde.name == stored["sde"]["name"] == cfg.sde.name
    assert model.parameterization == cfg.model.parameterization
    steps = {"ancestral": 5, "ald": 3, "pc": 3, "ode": 3, "ddim": 5, "dpm_solver": 5}
    for sampler, n in steps.items():
        with cfg.unlocked():
            cfg.sampling.sampler, cfg.sampling.steps = sampler, n
            cfg.sampling.ode_method = "heun"
            cfg.sampling.ald_eps = 1e-6
        validate_config(cfg, "sample", str(tmp_path))
        run_sampling(cfg, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "samples" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["sampler"] for r in records) == sorted(steps)
    for npz in (tmp_path / "samples").glob("*.npz"):
        assert np.isfinite(np.load(npz)["samples"]).all()
    validate_config(cfg, "eval", str(tmp_path))
    results = run_eval(cfg, str(tmp_path))["likelihood"]
    assert np.isfinite(results["ode_bpd"]) and np.isfinite(results["bound_bpd_total"])
    assert results["bound_bpd_total"] > 0 and results["ode_bpd"] > 0
