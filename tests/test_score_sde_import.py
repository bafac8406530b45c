"""score_sde_pytorch checkpoints into ours (compose/import_score_sde.py), against ../shared/fixtures/score_sde/:
tiny DDPM++, NCSN++ and DDPM networks written by score_sde's own code, with the outputs its code gives on fixed
inputs (README there). Skipped when ../shared is absent (users do not have it).

Tolerances: the networks' raw outputs agree to ~1e-6 of their scale (einsum and conv orders differ; the fixture's
README measures up to 1.3e-5 between thread counts of the peer itself), so outputs are compared at 1e-5 of the
largest value. The VP score also divides by the marginal std, which score_sde computes in float32 as
sqrt(1 - exp(2 log_mean_coeff)): at t = 1e-3 that cancellation is off by 1.2e-4 relative (our std agrees with
float64 to 1e-7), so the score is compared after that one factor is accounted for, and the std itself at 2e-4.
"""

import json
import math
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "score_sde"
NAMES = ("ddpmpp_tiny", "ncsnpp_tiny", "ddpm_tiny")
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="needs ../shared/fixtures/score_sde (CI has it)")


def fixture(name: str):
    folder = FIXTURES / name
    return folder / "checkpoint_tiny.pth", json.loads((folder / "config.json").read_text()), folder / "io.pt"


def close(ours: torch.Tensor, theirs: torch.Tensor, rel: float = 1e-5) -> float:
    """Largest |difference| as a fraction of the largest |value| (asserted below `rel` by the caller)."""
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from compose.import_score_sde import import_score_sde

    root = tmp_path_factory.mktemp("imported")
    for name in NAMES:
        ckpt, peer, _ = fixture(name)
        import_score_sde(ckpt, root / name, peer_config=peer)
    return root


def model_space(x: torch.Tensor, sde_name: str, centered: bool) -> tuple[torch.Tensor, float]:
    """The fixture's network input in our [-1, 1] model space, and the factor from our score to theirs."""
    return (x, 1.0) if centered else (2 * x - 1, 2.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("use_ema", [False, True], ids=["model", "ema"])
def test_imported_networks_give_the_peers_outputs_and_scores(imported, name, use_ema):
    from compose.checkpoints import load_score_model

    _, peer, io_path = fixture(name)
    io = torch.load(io_path, weights_only=True)
    model, _ = load_score_model(imported / name, use_ema=use_ema)
    centered = peer["data"]["centered"]
    x, factor = model_space(io["x"], model.sde.name, centered)
    t = io["t"]
    with torch.no_grad():
        raw = model.net(io["x"], io["labels"])  # the network alone, on the peer's own inputs and labels
        eps = model.eps(x, t)
        score = model(x, t) * factor
    tag = "ema" if use_ema else "model"
    assert close(raw, io[f"out_{tag}"]) < 1e-5
    _, sigma = model.sde.marginal(t)
    sigma_net = sigma / (1.0 if centered else 2.0)
    if model.sde.name == "ve":
        assert torch.allclose(sigma_net, io["labels"], rtol=1e-6)  # we feed sigma(t) in its data units
        assert close(score, io[f"score_{tag}"]) < 1e-5
    else:
        assert torch.allclose(999 * t, io["labels"], rtol=1e-7)  # we feed 999 t
        assert close(eps, io[f"out_{tag}"]) < 1e-5  # eps is the network output itself
        assert torch.allclose(sigma, io["std"], rtol=2e-4)  # their float32 std at t = 1e-3: 1.2e-4 off
        assert close(score * sigma[:, None, None, None] / io["std"][:, None, None, None], io[f"score_{tag}"]) < 1e-5


def test_the_weights_only_trap_and_what_is_allowed():
    """torch.load(weights_only=True) refuses score_sde's file (the optimizer's lr is a numpy.float64); our reader
    allows only numpy's scalar and dtype types, and keeps the raw EMA quirks: 156 shadows for 157 parameters."""
    import pickle

    from compose.import_score_sde import _numpy_safe_globals, read_score_sde_checkpoint

    ckpt_path, _, _ = fixture("ncsnpp_tiny")
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(ckpt_path, weights_only=True)
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}
    assert all(name.startswith("numpy") for name in allowed) and len(allowed) <= 4
    ckpt = read_score_sde_checkpoint(ckpt_path)
    assert isinstance(ckpt["optimizer"]["param_groups"][0]["lr"], float)
    assert len(ckpt["ema"]["shadow_params"]) == 156 and len([k for k in ckpt["model"] if k != "module.sigmas"]) == 157
    assert ckpt["model"]["module.sigmas"].dtype == torch.float64


def test_the_fourier_weight_comes_from_model_and_the_rest_from_ema(imported):
    from compose.import_score_sde import read_score_sde_checkpoint
    from infra.checkpoint import read_checkpoint

    theirs = read_score_sde_checkpoint(fixture("ncsnpp_tiny")[0])
    _, ours = read_checkpoint(imported / "ncsnpp_tiny")
    assert torch.equal(ours["ema"]["all_modules.0.W"], theirs["model"]["module.all_modules.0.W"])
    first_trainable = ours["ema"]["all_modules.1.weight"]
    assert torch.equal(first_trainable, theirs["ema"]["shadow_params"][0])
    assert not torch.equal(first_trainable, theirs["model"]["module.all_modules.1.weight"])  # EMA differs


def test_a_network_that_does_not_fit_is_refused_with_the_keys(tmp_path):
    from compose.import_score_sde import config_from_score_sde, import_score_sde
    from infra.checkpoint import CheckpointError

    ckpt_path, peer, _ = fixture("ddpmpp_tiny")
    cfg = config_from_score_sde(peer)
    cfg.model.base_channels = 16  # the wrong width: every shape differs
    with pytest.raises(CheckpointError, match=r"shape mismatches \['all_modules.0.weight"):
        import_score_sde(ckpt_path, tmp_path / "wide", cfg=cfg)
    cfg = config_from_score_sde(peer)
    cfg.model.num_res_blocks = 2  # extra blocks: missing keys, named
    with pytest.raises(CheckpointError, match=r"missing keys \['all_modules"):
        import_score_sde(ckpt_path, tmp_path / "deep", cfg=cfg)
    assert not (tmp_path / "wide").exists() and not (tmp_path / "deep").exists()  # nothing written
    discrete = json.loads(json.dumps(peer))
    discrete["training"]["continuous"] = False
    with pytest.raises(ValueError, match="continuous only"):
        config_from_score_sde(discrete)


def test_import_never_overwrites_a_work_dir(imported):
    from compose.import_score_sde import import_score_sde
    from infra.checkpoint import CheckpointError

    ckpt_path, peer, _ = fixture("ddpm_tiny")
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        import_score_sde(ckpt_path, imported / "ddpm_tiny", peer_config=peer)


@pytest.mark.parametrize("name", NAMES)
def test_every_sampler_runs_on_an_imported_checkpoint(imported, name, tmp_path):
    """Every sampler of --mode sample draws finite images of the right shape from the imported model."""
    import numpy as np

    from configs.default import get_default_config
    from evaluation.sample import sample_to_disk
    from samplers import SAMPLERS

    shutil_copy(imported / name, tmp_path / name)
    for sampler in SAMPLERS:
        cfg = get_default_config()
        cfg.sampling.sampler, cfg.sampling.num_samples, cfg.sampling.batch_size = sampler, 2, 2
        cfg.sampling.steps, cfg.sampling.ald_steps = 4, 1
        cfg.sampling.ode_method, cfg.sampling.rtol, cfg.sampling.atol = "dopri5", 1e-2, 1e-2
        with np.load(sample_to_disk(cfg, str(tmp_path / name))["npz"]) as out:
            images = out["samples"]
        assert images.shape == (2, 3, 16, 16) and np.isfinite(images).all(), sampler


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_imported_model_bits_per_dim_and_bound_on_tiny_cifar10(imported, tmp_path):
    """--mode eval's driver on an imported VE NCSN++: the ODE bits/dim and the bound run and are finite."""
    from configs.default import get_default_config
    from evaluation.likelihood_eval import run_likelihood_eval
    from tests.test_cifar10 import write_tiny_cifar10

    write_tiny_cifar10(tmp_path / "cifar")
    shutil_copy(imported / "ncsnpp_tiny", tmp_path / "w")
    cfg = get_default_config()
    cfg.data.root, cfg.eval.num_images, cfg.eval.batch_size, cfg.eval.bound_steps = str(tmp_path / "cifar"), 2, 2, 10
    out = run_likelihood_eval(cfg, str(tmp_path / "w"))
    assert math.isfinite(out["ode_bpd"]) and math.isfinite(out["bound_bpd_total"]) and out["num_dims"] == 768


@pytest.mark.slow
def test_import_sample_eval_and_continue_training_through_main(tmp_path):
    """The user's path, through main.py in subprocesses: --mode import of score_sde's NCSN++ checkpoint with its
    JSON config, --mode sample, --mode eval (ODE bits/dim and the bound) on a tiny CIFAR-10 archive, then
    --mode train continuing from the imported weights with the work dir's own config (configs/workdir.py)."""
    import subprocess
    import sys

    from tests.test_cifar10 import write_tiny_cifar10

    repo = Path(__file__).resolve().parents[1]
    ckpt, _, _ = fixture("ncsnpp_tiny")
    write_tiny_cifar10(tmp_path / "cifar")
    work = tmp_path / "work"
    data = [f"--config.data.root={tmp_path / 'cifar'}"]

    def main(*args):
        proc = subprocess.run([sys.executable, "main.py", f"--workdir={work}", *args], cwd=repo, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    main("--mode=import", f"--config.convert.checkpoint={ckpt}",
         f"--config.convert.peer_config={ckpt.parent / 'config.json'}")  # fmt: skip
    main("--mode=sample", "--sampler=dpm_solver", "--config.sampling.steps=5", "--config.sampling.num_samples=4")
    assert list((work / "samples").glob("dpm_solver_*.png"))
    main(
        "--mode=eval", *data, "--config.eval.num_images=2", "--config.eval.batch_size=2", "--config.eval.bound_steps=8"
    )
    results = json.loads((work / "eval" / "likelihood.json").read_text())
    assert math.isfinite(results["ode_bpd"]) and math.isfinite(results["bound_bpd_total"])
    main(
        f"--config=configs/workdir.py:{work}",
        "--mode=train",
        *data,
        "--config.training.n_iters=3",
        "--config.training.batch_size=2",
        "--config.training.checkpoint_every=3",
        "--config.training.snapshot_every=0",
    )
    assert (work / "checkpoints" / "ckpt_000003.pt").is_file()


@pytest.mark.parametrize("name,recipe", [("ncsnpp_tiny", "cifar10_ncsnpp_continuous"),
                                         ("ddpmpp_tiny", "cifar10_ddpmpp_continuous"),
                                         ("ddpm_tiny", "cifar10_ddpm_continuous")])  # fmt: skip
def test_our_recipes_describe_score_sdes_networks(tmp_path, name, recipe):
    """Without the peer's JSON: our recipe config, shrunk as the fixture was (16 px, its width, one block, attention
    at 8, no dropout), imports the checkpoint and gives the peer's EMA scores: the recipes are score_sde's configs."""
    import importlib

    from compose.checkpoints import load_score_model
    from compose.import_score_sde import import_score_sde

    ckpt, peer, io_path = fixture(name)
    cfg = importlib.import_module(f"configs.{recipe}").get_config()
    cfg.data.image_size, cfg.model.base_channels = 16, peer["model"]["nf"]
    cfg.model.channel_mult, cfg.model.num_res_blocks = tuple(peer["model"]["ch_mult"]), 1
    cfg.model.attn_resolutions, cfg.model.dropout = (8,), 0.0
    import_score_sde(ckpt, tmp_path / "w", cfg=cfg)
    model, _ = load_score_model(tmp_path / "w", use_ema=True)
    io = torch.load(io_path, weights_only=True)
    x, factor = model_space(io["x"], model.sde.name, peer["data"]["centered"])
    with torch.no_grad():
        score = model(x, io["t"]) * factor
    if model.sde.name != "ve":  # their float32 std at t = 1e-3 (module docstring)
        sigma = model.sde.marginal(io["t"])[1]
        score = score * (sigma / io["std"])[:, None, None, None]
    assert close(score, io["score_ema"]) < 1e-5
