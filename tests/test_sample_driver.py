"""The sampling driver: checkpoint -> PNG + .npz + JSON line, resumable batches, and the notebook API.

Quality is checked where it is exact: `sample()` on a ScoreModel whose network is the mixture oracle's ideal
noise predictor must reproduce the mixture (mean exact log-density within 5 Monte-Carlo s.e.).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import compose.sampling as sampling
import evaluation.sample as driver
from compose.build import make_score_model
from configs.default import get_default_config
from data.toy import make_mixture
from infra.checkpoint import save_checkpoint
from models.score import ScoreModel
from sde import make_sde


def toy_cfg(**sampling):
    cfg = get_default_config()
    cfg.data.dataset, cfg.data.dim = "gmm", 2
    cfg.model.name, cfg.model.hidden, cfg.model.depth, cfg.model.dropout = "mlp", 16, 1, 0.0
    cfg.sampling.update(dict(sampler="pc", steps=5, num_samples=10, batch_size=4) | sampling)
    return cfg


def image_cfg(**sampling):
    cfg = get_default_config()
    cfg.model.base_channels, cfg.model.channel_mult, cfg.model.attn_resolutions = 4, (1, 2), ()
    cfg.model.num_res_blocks = 1
    cfg.sampling.update(dict(sampler="ddim", steps=2, num_samples=4, batch_size=4) | sampling)
    return cfg


def write_checkpoint(cfg, workdir):
    torch.manual_seed(0)
    model = make_score_model(cfg)
    state = {
        "step": 1,
        "config": json.dumps(cfg.to_dict()),
        "model": model.net.state_dict(),
        "ema": model.net.state_dict(),
    }
    return save_checkpoint(workdir, 1, state)


def test_run_sampling_writes_npz_scatter_and_json_line(tmp_path):
    cfg = toy_cfg()
    write_checkpoint(cfg, tmp_path)
    info = driver.sample_to_disk(cfg, str(tmp_path))
    samples = np.load(info["npz"])["samples"]
    assert samples.shape == (10, 2) and np.isfinite(samples).all()
    assert Image.open(info["png"]).size[0] > 100
    lines = (tmp_path / "samples" / "samples.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["sampler"] == "pc" and record["options"]["snr"] == 0.16 and record["wall_time"] > 0
    assert record["nfe_per_batch"] == [11, 11, 11]  # 5 steps x (predictor + 1 corrector) + denoising
    assert not list((tmp_path / "samples").glob("parts_*"))  # merged and cleaned up


def test_run_sampling_writes_an_image_grid(tmp_path):
    cfg = image_cfg()
    write_checkpoint(cfg, tmp_path)
    info = driver.sample_to_disk(cfg, str(tmp_path))
    assert np.load(info["npz"])["samples"].shape == (4, 1, 28, 28) and info["nfe"] == 3
    with Image.open(info["png"]) as png:
        assert png.mode == "L" and png.size == (2 + 2 * 30, 2 + 2 * 30)  # 2 x 2 grid with 2-pixel padding


def test_killed_run_resumes_from_finished_batches(tmp_path, monkeypatch):
    cfg = toy_cfg(sampler="ancestral", steps=4)
    write_checkpoint(cfg, tmp_path / "a")
    write_checkpoint(cfg, tmp_path / "b")
    clean = np.load(driver.sample_to_disk(cfg, str(tmp_path / "a"))["npz"])["samples"]

    real, calls = driver.sample_batch, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "sample_batch", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        driver.sample_to_disk(cfg, str(tmp_path / "b"))
    assert len(list((tmp_path / "b" / "samples").glob("parts_*/batch_*.npz"))) == 1
    calls.clear()
    monkeypatch.setattr(driver, "sample_batch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    info = driver.sample_to_disk(cfg, str(tmp_path / "b"))
    assert len(calls) == 2 and info["resumed_batches"] == 1
    np.testing.assert_array_equal(np.load(info["npz"])["samples"], clean)


def test_notebook_api_samples_the_oracle_mixture():
    """ScoreModel(oracle eps-net): 1000 DPM-Solver++ samples, mean log p_0 within 5 s.e. of E_p[log p_0]."""
    mixture, sde = make_mixture("gmm2d"), make_sde("vp")
    model = ScoreModel(mixture.eps_net(sde), sde)
    x, info = sampling.sample(
        model,
        "dpm_solver",
        1000,
        shape=(2,),
        steps=25,
        grid="logsnr",
        order=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (1000, 2) and info["nfe"] == 26 and info["options"]["order"] == 3
    truth = mixture.log_prob(mixture.sample(100_000, torch.Generator().manual_seed(1), dtype=torch.float64))
    se = float(truth.std()) / 1000**0.5
    assert abs(float(mixture.log_prob(x.double()).mean() - truth.mean())) < 5 * se


def test_notebook_api_rejects_unknown_names():
    sde = make_sde("ve")
    model = ScoreModel(make_mixture("gmm2d").eps_net(sde), sde)
    with pytest.raises(ValueError, match=r"unknown sampler 'euler'; valid: \['ald', 'ancestral'"):
        sampling.sample(model, "euler", 4, shape=(2,))
    with pytest.raises(ValueError, match="unknown option 'n_steps' for sampler 'pc'"):
        sampling.sample(model, "pc", 4, shape=(2,), n_steps=3)
    for num in (0, -2, 2.5):  # used to be range()'s 'arg 3 must not be zero' or a silent empty result
        with pytest.raises(ValueError, match=f"number of samples must be an integer >= 1, got {num}"):
            sampling.sample(model, "pc", num, shape=(2,))


def test_build_score_fn_is_the_models_score():
    sde = make_sde("vp")
    model = ScoreModel(make_mixture("gmm2d").eps_net(sde), sde)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(sampling.build_score_fn(model, None)(x, t), model(x, t))


@pytest.mark.slow
def test_main_sample_mode_end_to_end(tmp_path):
    """`python main.py --mode sample` validates the config, then runs the driver on the latest checkpoint."""
    import pathlib
    import subprocess
    import sys

    write_checkpoint(toy_cfg(), tmp_path)
    repo = pathlib.Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "main.py",
        "--config",
        "configs/toy_gmm.py",
        "--mode",
        "sample",
        "--sampler",
        "ddim",
        "--workdir",
        str(tmp_path),
        "--config.sampling.num_samples=6",
        "--config.sampling.steps=3",
    ]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True, timeout=120)
    record = json.loads((tmp_path / "samples" / "samples.jsonl").read_text().splitlines()[-1])
    assert record["sampler"] == "ddim" and record["nfe"] == 4 and record["num_samples"] == 6
    bad = subprocess.run(
        cmd[:-1] + ["--config.sampling.steps=-1"], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "sampling.steps = -1" in bad.stderr


@pytest.mark.parametrize(
    "sampler, options",
    [
        ("unipc", {"steps": 20, "variant": "bh1", "order": 3}),
        ("edm", {"steps": 20, "s_churn": 5.0}),
        ("dpm_solver", {"steps": 20, "order": 3, "third_order": "reference", "lower_order_final": "last"}),
        ("ode", {"steps": 10, "ode_method": "heun", "ode_variable": "sigma"}),
    ],
)
def test_notebook_api_runs_the_new_samplers_with_config_keys(sampler, options):
    """The notebook API takes the new options by keyword or config key and records them."""
    mixture, sde = make_mixture("gmm2d"), make_sde("ve")
    model = ScoreModel(mixture.eps_net(sde), sde)
    x, info = sampling.sample(model, sampler, 200, shape=(2,), generator=torch.Generator().manual_seed(0), **options)
    assert x.shape == (200, 2) and torch.isfinite(x).all()
    recorded = info["options"]
    for key, value in options.items():
        if key != "steps":
            assert value in recorded.values(), (key, recorded)


def test_biased_combinations_are_warned_about_not_refused(caplog):
    """A measured badly biased (sampler, path, grid) logs one warning with the reason; the default grid does not."""
    from compose.biased import bias_warning

    assert "uniform-in-t leaves too few steps" in bias_warning("dpm_solver", "vp", "uniform")
    assert bias_warning("dpm_solver", "vp", "logsnr") is None and bias_warning("pc", "vp", "uniform") is None
    assert bias_warning("dpm_solver", "ve", "uniform") is None  # uniform in t is log-SNR spacing on VE
    mixture, sde = make_mixture("gmm2d"), make_sde("vp")
    model = ScoreModel(mixture.eps_net(sde), sde)
    with caplog.at_level("WARNING"):
        sampling.sample(model, "unipc", 8, shape=(2,), steps=5, grid="uniform")
    assert any("is biased" in r.message and "'uniform'" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        sampling.sample(model, "unipc", 8, shape=(2,), steps=5)
    assert not any("is biased" in r.message for r in caplog.records)


def test_an_option_can_make_a_combination_biased(caplog):
    """UniPC's noise form with bh2 and DPM-Solver-fast's noise form on the quadratic grid of the cosine chain (its
    default there) are warned about, the data form, bh1 and plain singlestep steps are not; through the notebook API
    with the sampler's defaults filled in."""
    from compose.biased import bias_warning

    noise_bh2 = {"prediction": "noise", "variant": "bh2"}
    assert "B(h) = e^h - 1" in bias_warning("unipc", "cosine", "quadratic", noise_bh2)
    assert bias_warning("unipc", "cosine", "quadratic", {"prediction": "data", "variant": "bh2"}) is None
    assert bias_warning("unipc", "cosine", "quadratic", {"prediction": "noise", "variant": "bh1"}) is None
    assert bias_warning("unipc", "cosine", "logsnr", noise_bh2) is None
    assert "equal-step Adams-Bashforth" in bias_warning("pndm", "cosine", "quadratic")
    from samplers import default_grid

    for name in ("cosine", "rectified_flow", "vp"):  # PNDM's default grid is log-SNR: never the biased one
        assert default_grid(make_sde(name), "pndm") == "logsnr" and bias_warning("pndm", name, "logsnr") is None
    # LMS steps in EDM's sigma: Karras where alpha_t = 1, quadratic in t elsewhere (measured best of three grids)
    assert [default_grid(make_sde(n), "lms") for n in ("vp", "cosine", "ve", "edm")] == ["quadratic"] * 2 + [
        "karras"
    ] * 2
    noise_fast = {"prediction": "noise", "method": "fast"}
    assert "DPM-Solver-fast calls at the grid's own times" in bias_warning(
        "dpm_solver", "rectified_flow", "quadratic", noise_fast
    )
    assert bias_warning("dpm_solver", "cosine", "quadratic", {"prediction": "data", "method": "fast"}) is None
    assert bias_warning("dpm_solver", "cosine", "quadratic", {"prediction": "noise", "method": "singlestep"}) is None
    assert bias_warning("dpm_solver", "cosine", "logsnr", noise_fast) is None
    assert "need many steps" in bias_warning("sa_solver", "vp", "logsnr", {"prediction": "noise", "tau": 1.0})
    assert bias_warning("sa_solver", "vp", "logsnr", {"prediction": "noise", "tau": 0.0}) is None
    assert bias_warning("sa_solver", "vp", "logsnr", {"prediction": "data", "tau": 1.0}) is None
    dpm2_a = {"prediction": "noise", "method": "singlestep", "eta": 1.0}  # the ancestral DPM-Solver-2 at eta = 1
    assert "twice this grid's first step" in bias_warning("dpm_solver", "cosine", "quadratic", dpm2_a)
    assert bias_warning("dpm_solver", "cosine", "quadratic", {**dpm2_a, "eta": 0.7}) is None
    assert bias_warning("dpm_solver", "cosine", "quadratic", {**dpm2_a, "prediction": "data"}) is None
    sde_dpm = {"prediction": "noise", "method": "multistep", "eta": 0.5}  # SDE-DPM-Solver (noise form)
    assert "prediction='noise', method='multistep', eta > 0" in bias_warning(
        "dpm_solver", "cosine", "quadratic", sde_dpm
    )
    assert bias_warning("dpm_solver", "rectified_flow", "quadratic", {**sde_dpm, "eta": 0.0}) is None
    assert bias_warning("dpm_solver", "cosine", "logsnr", sde_dpm) is None
    for grid in ("logsnr", "quadratic"):  # k-diffusion's adaptive solver: any grid (only its ends are read)
        message = bias_warning("dpm_solver", "rectified_flow", grid, {"method": "adaptive_pid"})
        assert "previous state's size sets the tolerance" in message and "with grid" not in message
    assert bias_warning("dpm_solver", "vp", "logsnr", {"method": "adaptive_pid"}) is None
    mixture, sde = make_mixture("gmm2d"), make_sde("cosine")
    model = ScoreModel(mixture.eps_net(sde), sde)
    with caplog.at_level("WARNING"):
        sampling.sample(model, "unipc", 8, shape=(2,), steps=5, prediction="noise")  # bh2 and quadratic: defaults
    assert any("B(h) = e^h - 1" in r.message for r in caplog.records)


def test_steps_zero_means_each_samplers_own_default():
    """sampling.steps = 0 (the config's default) gives each sampler its DEFAULT_STEPS; a negative count is refused."""
    from compose.sampling import with_default_steps
    from compose.validate import ConfigError, validate_config
    from configs.toy_gmm import get_config
    from samplers import DEFAULT_STEPS, SAMPLERS

    assert set(DEFAULT_STEPS) == set(SAMPLERS)
    for name in SAMPLERS:
        assert with_default_steps({"sampler": name, "steps": 0})["steps"] == DEFAULT_STEPS[name]
        assert with_default_steps({"sampler": name, "steps": 7})["steps"] == 7
    cfg = get_config()
    cfg.sampling.steps = -1
    with pytest.raises(ConfigError, match="sampling.steps = -1 must be an integer >= 0"):
        validate_config(cfg, "train", "/nonexistent/never/created")


@pytest.mark.parametrize(
    "settings, total",
    [
        ({"sampler": "pc", "steps": 9, "pc_loop": "predictor_first"}, 9),
        ({"sampler": "pc", "steps": 9, "pc_loop": "score_sde"}, 10),  # a step from each of the 10 grid times
        ({"sampler": "ald", "steps": 9}, 10),  # one per level
        ({"sampler": "ode", "steps": 9, "ode_method": "dopri5"}, None),  # adaptive: reports at the end only
        ({"sampler": "dpm_solver", "steps": 9, "dpm_method": "adaptive_pid"}, None),
        ({"sampler": "dpm_solver", "steps": 9, "dpm_method": "fast", "order": 3}, 4),  # orders 3, 3, 2, 1
        ({"sampler": "dpm_solver", "steps": 9, "dpm_method": "sde"}, 9),
        ({"sampler": "restart", "steps": 9, "restart_intervals": "[[3, 2, 0.06, 0.3], [4, 1, 1.0, 2.0]]"}, 9 + 4 + 3),
        ({"sampler": "restart", "steps": 9}, 9 + 4),  # the default interval
    ],
)
def test_progress_bar_total_is_the_number_of_callbacks(settings, total):
    from data.toy import make_mixture
    from samplers import count_nfe, run_sampler
    from sde import make_sde

    bar = sampling.steps_bar({"ode_method": "euler", **settings}, count_nfe(lambda x, t: x))
    assert bar.total == total
    bar.close()
    if total is not None:  # the sampler calls back exactly that often
        sde, calls = make_sde("ve"), []
        options = {"loop": settings["pc_loop"], "predictor": "euler_maruyama"} if settings["sampler"] == "pc" else {}
        if settings["sampler"] == "dpm_solver":
            options = {"method": settings["dpm_method"], "order": settings.get("order", 2)}
        if "restart_intervals" in settings:
            options = {"intervals": settings["restart_intervals"]}
        run_sampler(settings["sampler"], make_mixture("gmm2d").score_fn(sde), sde, torch.zeros(4, 2), steps=9,
                    callback=calls.append, **options)  # fmt: skip
        assert len(calls) == total
