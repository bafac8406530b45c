"""Command-line entry point: parse flags and the config, validate, then dispatch to one mode. No logic lives here.

    python main.py --config configs/vp_mnist.py --mode train --workdir runs/vp_mnist
    python main.py --config configs/vp_mnist.py --mode sample --sampler pc --workdir runs/vp_mnist
    python main.py --config configs/vp_mnist.py --mode eval --workdir runs/vp_mnist
    python main.py --mode import --config.convert.checkpoint=checkpoint_8.pth --config.convert.peer_config=cfg.json
Any config key can be overridden: --config.training.n_iters=500. Under torchrun, train, sample and eval run
distributed (docs/distributed.md).
"""

from __future__ import annotations

import logging
import re
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

MODES = ("train", "sample", "eval", "train_classifier", "train_evalnet", "import")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/vp_mnist.py", "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory for checkpoints, logs, samples and results.")
flags.DEFINE_string("mode", "train", f"One of {', '.join(MODES)}.")
flags.DEFINE_string("sampler", None, "Sampler name for --mode sample (overrides config.sampling.sampler).")
flags.DEFINE_boolean("verbose", False, "Show the full traceback of a usage error.")
EXIT_USAGE = 2


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a usage error (a missing config file, a misspelt config key, a bad value) reported
    as one `error: ...` line and exit code 2 instead of a traceback (unless --verbose)."""
    try:
        rest = FLAGS(argv)
        FLAGS.config.to_dict()  # a config file that failed to load raises only when first read
        return rest
    except Exception as err:  # noqa: BLE001 - whatever the flag and config parsers raise is a usage error here
        if "--verbose" in argv:
            raise
        sys.stderr.write(f"error: {usage_message(err, argv)}\n")
        sys.exit(EXIT_USAGE)


def usage_message(err: BaseException, argv: list[str]) -> str:
    """One line for a flag-parsing exception, naming the bad key or file and what is allowed."""
    raw = str(err)
    clean = raw.replace("\\n", " ").replace("\\", "")
    misspelt = re.search(r"'(\w+)'\s*Did you mean \"(\w+)\"", clean)
    if misspelt:
        bad, good = misspelt.groups()
        keys = [a.split("=")[0].lstrip("-") for a in argv if a.startswith("--config.")]
        key = next((k for k in keys if re.search(rf"\.{bad}(\.|$)", k)), bad)
        suggestion = re.sub(rf"\.{bad}(\.|$)", rf".{good}\1", key, count=1)
        return f"unknown config key {key}; did you mean {suggestion}?"
    unknown = re.fullmatch(r"\"?'(\w+)'\"?", raw.strip())  # ml_collections' bare KeyError when nothing is close
    if unknown:
        bad = unknown.group(1)
        keys = [a.split("=")[0].lstrip("-") for a in argv if a.startswith("--config.")]
        key = next((k for k in keys if re.search(rf"\.{bad}(\.|$)", k)), None)
        if key is not None:
            section = _config_section(key[: key.index(f".{bad}")])
            valid = f"; valid keys there: {', '.join(sorted(section))}" if section else ""
            return f"unknown config key {key}{valid}"
    if "has no attribute 'get_config'" in raw or "object has no attribute 'to_dict'" in raw:
        given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
        given += [b for a, b in zip(argv, argv[1:], strict=False) if a == "--config"]
        config = given[-1] if given else "the --config file"
        return f"{config} must define get_config() returning an ml_collections.ConfigDict (see configs/vp_mnist.py)"
    if isinstance(err, OSError) and "config file" in raw:
        return f"cannot load the --config file: {raw.strip().splitlines()[-1].strip()}"
    return " ".join(raw.split())


def _config_section(path: str) -> list[str]:
    """The keys of the default config's section at `path` ("config.sampling"), or [] if it is not one."""
    from configs.default import get_default_config

    node = get_default_config()
    try:
        for part in path.split(".")[1:]:
            node = node[part]
    except (KeyError, TypeError, AttributeError):
        return []
    return list(node.keys()) if hasattr(node, "keys") else []


def main(argv):
    """Validate everything, then run the chosen mode."""
    del argv
    # Until a training loop installs its own graceful handler, SIGTERM (a pre-empted job) exits with the same
    # "interrupted, rerun to resume" code 75 instead of 143: nothing has been trained yet, so nothing is lost.
    signal.signal(signal.SIGTERM, _interrupted_during_startup)
    from compose.validate import ConfigError, validate_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    cfg = FLAGS.config
    if FLAGS.mode not in MODES:
        sys.exit(f"error: unknown --mode {FLAGS.mode!r}; valid modes: {', '.join(MODES)}")
    if FLAGS.workdir is not None and not FLAGS.workdir.strip():
        sys.stderr.write("error: --workdir is empty; give a folder for checkpoints and results\n")
        sys.exit(EXIT_USAGE)
    workdir = FLAGS.workdir or f"runs/{cfg.sde.name}_{cfg.data.dataset}"
    if FLAGS.sampler is not None:
        with cfg.unlocked():
            cfg.sampling.sampler = FLAGS.sampler
    try:
        validate_config(cfg, FLAGS.mode, workdir)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    if FLAGS.mode in ("train", "sample"):
        from compose.biased import config_bias_warning

        warning = config_bias_warning(cfg)
        if warning:
            logging.getLogger("main").warning(warning)

    try:
        run_mode(FLAGS.mode, cfg, workdir)
    except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError (CUDA) is a RuntimeError too
        if FLAGS.verbose or not is_out_of_memory(err):
            raise
        sys.exit(f"error: {out_of_memory_message(FLAGS.mode, cfg)} ({' '.join(str(err).split())[:200]})")
    from infra.distributed import finish

    finish()  # under torchrun: leave the process group and exit 0 now (docs/distributed.md, "Exiting")


def is_out_of_memory(err: BaseException) -> bool:
    """A failed allocation on the host (CPU allocator, MemoryError) or the GPU (torch.OutOfMemoryError)."""
    text = str(err)
    return isinstance(err, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text


def out_of_memory_message(mode: str, cfg) -> str:
    """Which batch size to lower for the mode that ran out of memory; finished work is on disk."""
    key = {
        "train": "training.batch_size",
        "sample": "sampling.batch_size",
        "eval": "eval.batch_size",
        "train_classifier": "classifier.batch_size",
        "train_evalnet": "classifier.evalnet_batch_size",
    }.get(mode)
    if key is None:
        return f"out of memory in --mode {mode}"
    section, name = key.split(".")
    value = cfg[section][name]
    return (
        f"out of memory in --mode {mode} at {key} = {value}: lower it (--config.{key}=...) and rerun the same "
        "command; finished checkpoints and batches are kept"
    )


def _interrupted_during_startup(signum, frame) -> None:
    sys.stderr.write("SIGTERM during start-up: nothing done yet; rerun the same command (exit code 75)\n")
    sys.exit(75)


def run_mode(mode: str, cfg, workdir: str) -> None:
    """Dispatch to the mode's driver; results go to the work dir (the Python API returns them instead)."""
    from infra.checkpoint import CheckpointError

    if mode == "train":
        from training.loop import TrainingDiverged, train

        try:
            train(cfg, workdir, validate=False)  # validated above
        except (TrainingDiverged, CheckpointError) as err:  # diverged; work dir busy; resume refused
            sys.exit(f"error: {err}")
    elif mode == "sample":
        from evaluation.sample import run_sampling

        run_sampling(cfg, workdir)
    elif mode == "eval":
        from evaluation.evaluate import run_eval

        run_eval(cfg, workdir)
    elif mode == "train_classifier":
        from training.classifier import train_classifier
        from training.loop import TrainingDiverged

        try:
            train_classifier(cfg, workdir, validate=False)
        except (TrainingDiverged, CheckpointError) as err:  # diverged; a classifier already training there
            sys.exit(f"error: {err}")
    elif mode == "import":
        from compose.importers import run_import

        try:
            run_import(cfg, workdir)
        except (CheckpointError, ValueError) as err:  # not that format, keys or shapes that differ, a used work dir
            sys.exit(f"error: {err}")
    else:
        from training.evalnet import train_evalnet

        try:
            train_evalnet(cfg, workdir, validate=False)
        except CheckpointError as err:  # an evaluation net already training there
            sys.exit(f"error: {err}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
