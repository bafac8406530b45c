"""Checkpoint files: atomic writes with sha256 sidecars, retention, refusal of corrupt/truncated/empty/unsafe files
(with fallback to the previous good one, deleting nothing), weights_only loading even under
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, a repo-wide scan for unsafe torch.load calls, and load_score_model."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compose.build import make_score_model
from compose.checkpoints import check_resume_config, load_score_model, score_model_from
from configs.default import get_default_config
from infra.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
    sha256_file,
    sidecar_path,
)
from tests.test_sample_driver import write_checkpoint

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg():
    cfg = get_default_config()
    cfg.model.base_channels, cfg.model.channel_mult, cfg.model.attn_resolutions = 4, (1, 2), ()
    cfg.model.num_res_blocks = 1
    return cfg


def fake_state(step: int) -> dict:
    w = {"w": torch.full((3,), float(step))}
    return {"step": step, "config": json.dumps(tiny_cfg().to_dict()), "w": w["w"], "model": w, "ema": w}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_save_roundtrip_sidecar_and_retention(tmp_path):
    for step in (10, 20, 30, 40):
        path = save_checkpoint(tmp_path, step, fake_state(step), keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt_000030.pt", "ckpt_000030.pt.sha256", "ckpt_000040.pt", "ckpt_000040.pt.sha256"]
    # The sidecar is in `sha256sum -c` format and matches the file.
    digest, name = sidecar_path(path).read_text().split()
    assert (digest, name) == (sha256_file(path), path.name)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 40 and torch.equal(ckpt["w"], torch.full((3,), 40.0))
    assert latest_checkpoint(tmp_path) == path
    # An existing valid checkpoint of the same step is not rewritten (a kill then cannot invalidate it).
    before = path.read_bytes()
    save_checkpoint(tmp_path, 40, fake_state(99), keep=2)
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "empty", "no_sidecar", "bad_sidecar"])
def test_damaged_checkpoint_refused_and_resume_falls_back(tmp_path, damage):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, fake_state(step), keep=5)
    newest = checkpoint_path(tmp_path, 3)
    data = newest.read_bytes()
    if damage == "flip_byte":
        newest.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    elif damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        newest.write_bytes(b"")
    elif damage == "no_sidecar":
        sidecar_path(newest).unlink()
    else:
        sidecar_path(newest).write_text("not-a-hash\n")
    before = tree(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape(str(newest))):
        load_checkpoint(newest)
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 2)
    path, ckpt = load_latest_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 2) and ckpt["step"] == 2
    assert tree(tmp_path) == before  # nothing deleted or changed by refusing and falling back


def test_new_save_sets_a_corrupt_file_aside_and_never_drops_the_last_valid(tmp_path):
    save_checkpoint(tmp_path, 1, fake_state(1), keep=1)
    path = save_checkpoint(tmp_path, 2, fake_state(2), keep=1)
    path.write_bytes(b"garbage")
    save_checkpoint(tmp_path, 2, fake_state(2), keep=1)  # same step again: the corrupt file is kept as evidence
    assert load_checkpoint(path)["step"] == 2
    aside = [p.name for p in (tmp_path / "checkpoints").iterdir() if ".corrupt-" in p.name]
    assert any(n.startswith("ckpt_000002.pt.corrupt-") and not n.endswith(".sha256") for n in aside), aside
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000002.pt"]


class Payload:
    """A pickle that runs code when unpickled: writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('pwned')",))


def write_malicious(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A torch-zip .pt and a raw-pickle .pt, both with VALID sidecars (an attacker can write those too)."""
    marker = tmp_path / "marker"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    zip_pt, raw_pt = folder / "ckpt_000001.pt", folder / "ckpt_000002.pt"
    torch.save({"format": "scoresde-checkpoint-v1", "step": 1, "evil": Payload(marker)}, zip_pt)
    raw_pt.write_bytes(pickle.dumps({"format": "scoresde-checkpoint-v1", "evil": Payload(marker)}))
    for p in (zip_pt, raw_pt):
        sidecar_path(p).write_text(f"{sha256_file(p)}  {p.name}\n")
    return marker, zip_pt, raw_pt


def test_malicious_pickle_is_refused_and_runs_no_code(tmp_path):
    marker, zip_pt, raw_pt = write_malicious(tmp_path)
    for path in (zip_pt, raw_pt):
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            load_score_model(path)
    assert not marker.exists()
    # Control: the payload is live, so the refusal above is what kept the marker from being written.
    pickle.loads(raw_pt.read_bytes())
    assert marker.read_text() == "pwned"


@pytest.mark.slow
def test_malicious_pickle_refused_with_force_no_weights_only_env(tmp_path):
    """torch 2.13 applies TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only when weights_only is not passed; ours always is."""
    marker, zip_pt, raw_pt = write_malicious(tmp_path)
    code = (
        "import sys\nfrom infra.checkpoint import load_checkpoint, CheckpointError\n"
        "for p in sys.argv[1:]:\n    try:\n        load_checkpoint(p)\n        print('LOADED', p)\n"
        "    except CheckpointError as e:\n        print('REFUSED', p)\n"
    )
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(zip_pt), str(raw_pt)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("REFUSED") == 2 and "LOADED" not in out.stdout, out.stdout
    assert not marker.exists()


def _unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of torch.load(...) calls without a literal weights_only=True."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = ast.unparse(node.func.value)
            if owner in ("torch", "torch.serialization"):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                bad += [] if ok else [node.lineno]
    return bad


def test_every_torch_load_in_the_repo_passes_weights_only_true():
    assert _unsafe_torch_loads("torch.load(f)\nx = torch.load(f, weights_only=True)\n") == [1]  # the scanner works
    offenders = []
    for path in REPO.rglob("*.py"):
        if any(part.startswith(".") or part in ("runs", "build") for part in path.relative_to(REPO).parts):
            continue
        text = path.read_text(errors="replace")
        if "load" not in text:
            continue
        try:
            offenders += [f"{path.relative_to(REPO)}:{n}" for n in _unsafe_torch_loads(text)]
        except SyntaxError:  # a file being edited right now: fall back to a textual check
            if re.search(r"torch\.load\((?![^)]*weights_only\s*=\s*True)", text):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_load_score_model_rebuilds_the_network_from_the_stored_config(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    raw, ema = make_score_model(cfg), make_score_model(cfg)
    state = {"step": 5, "config": json.dumps(cfg.to_dict()), "model": raw.net.state_dict(), "ema": ema.net.state_dict()}
    path = save_checkpoint(tmp_path, 5, state)
    x, t = torch.randn(3, 1, 28, 28), torch.full((3,), 0.4)
    for target in (tmp_path, tmp_path / "checkpoints", path):
        model, cfg_dict = load_score_model(target, device="cpu", use_ema=True)
        assert not model.training and cfg_dict["model"]["base_channels"] == 4
        torch.testing.assert_close(model(x, t), ema.eval()(x, t), rtol=0, atol=0)
    model, _ = load_score_model(tmp_path, use_ema=False)
    torch.testing.assert_close(model(x, t), raw.eval()(x, t), rtol=0, atol=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_score_model(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no checkpoint file or work dir"):
        load_score_model(tmp_path / "missing")


def test_precision_and_compile_are_run_time_choices_of_the_loading_command(tmp_path):
    """sample/eval pass cfg.model.precision and cfg.model.compile: the loaded model takes them, the weights are
    untouched (torch.compile wraps lazily; nothing is compiled until the first call, not made here)."""
    path = write_checkpoint(tiny_cfg(), tmp_path)
    found, ckpt = read_checkpoint(path)
    loaded, _ = score_model_from(found, ckpt, "cpu", precision="bf16", compile=True)
    assert loaded.precision == "bf16" and isinstance(loaded.net, torch._dynamo.eval_frame.OptimizedModule)
    plain, _ = score_model_from(found, ckpt, "cpu")
    assert plain.precision == "fp32" and not isinstance(plain.net, torch._dynamo.eval_frame.OptimizedModule)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        score_model_from(found, ckpt, "cpu", precision="fp8")


def test_resume_with_a_changed_model_or_sde_is_refused_listing_the_keys():
    stored = json.dumps(tiny_cfg().to_dict())
    cfg = tiny_cfg()
    cfg.training.n_iters, cfg.training.lr = 99, 1e-4  # training-length keys may change
    check_resume_config(stored, cfg, "ckpt_000010.pt")
    cfg.model.base_channels, cfg.sde.beta_max = 16, 10.0
    with pytest.raises(CheckpointError) as err:
        check_resume_config(stored, cfg, "ckpt_000010.pt")
    message = str(err.value)
    assert "ckpt_000010.pt" in message and "model.base_channels: 4 -> 16" in message
    assert "sde.beta_max: 20.0 -> 10.0" in message and "n_iters" not in message


def test_files_are_created_with_the_users_umask(tmp_path):
    """Checkpoints and their sidecars get 0666 & ~umask (mkstemp alone would give 0600)."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, 1, fake_state(1))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert Path(f"{path}.sha256").stat().st_mode & 0o777 == 0o644


def test_a_checkpoint_without_its_ema_is_refused_and_skipped(tmp_path):
    """A file whose hash verifies but which lacks an entry a score checkpoint needs is refused by name, and the
    newest loadable one is used instead (for training, sampling and evaluation alike)."""
    save_checkpoint(tmp_path, 1, fake_state(1))
    broken = {k: v for k, v in fake_state(2).items() if k != "ema"}
    path = save_checkpoint(tmp_path, 2, broken)
    with pytest.raises(CheckpointError, match=r"not a complete scoresde score_model checkpoint: it lacks \['ema'\]"):
        load_checkpoint(path)
    found, ckpt = load_latest_checkpoint(tmp_path)
    assert found == checkpoint_path(tmp_path, 1) and ckpt["step"] == 1


def test_a_full_disk_names_the_file_and_keeps_the_older_checkpoints(tmp_path, monkeypatch):
    import errno

    import infra.checkpoint as checkpoint

    save_checkpoint(tmp_path, 1, fake_state(1))

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    with pytest.raises(
        CheckpointError,
        match=r"could not write checkpoint .*ckpt_000002.pt \(No space left on "
        r"device\); the older checkpoints \['ckpt_000001.pt'\] are intact",
    ):
        save_checkpoint(tmp_path, 2, fake_state(2))
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1)
