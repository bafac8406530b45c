"""Command-line entry point: parse flags and the config, validate, then dispatch to one mode. No logic lives here.

    python main.py --config configs/vp_mnist.py --mode train --workdir runs/vp_mnist
    python main.py --config configs/vp_mnist.py --mode sample --sampler pc --workdir runs/vp_mnist
    python main.py --config configs/vp_mnist.py --mode eval --workdir runs/vp_mnist
Any config key can be overridden: --config.training.n_iters=500. Under torchrun, every mode runs distributed.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

MODES = ("train", "sample", "eval", "train_classifier", "train_evalnet")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/vp_mnist.py", "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory for checkpoints, logs, samples and results.")
flags.DEFINE_string("mode", "train", f"One of {', '.join(MODES)}.")
flags.DEFINE_string("sampler", None, "Sampler name for --mode sample (overrides config.sampling.sampler).")


def main(argv):
    """Validate everything, then run the chosen mode."""
    del argv
    from configs.validate import ConfigError, validate_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    cfg = FLAGS.config
    if FLAGS.mode not in MODES:
        sys.exit(f"error: unknown --mode {FLAGS.mode!r}; valid modes: {', '.join(MODES)}")
    workdir = FLAGS.workdir or f"runs/{cfg.sde.name}_{cfg.data.dataset}"
    if FLAGS.sampler is not None:
        with cfg.unlocked():
            cfg.sampling.sampler = FLAGS.sampler
    try:
        validate_config(cfg, FLAGS.mode, workdir)
    except ConfigError as err:
        sys.exit(f"error: {err}")

    if FLAGS.mode == "train":
        from training.loop import train

        return train(cfg, workdir)
    if FLAGS.mode == "sample":
        from evaluation.sample import run_sampling

        return run_sampling(cfg, workdir)
    if FLAGS.mode == "eval":
        from evaluation.evaluate import run_eval

        return run_eval(cfg, workdir)
    if FLAGS.mode == "train_classifier":
        from training.classifier import train_classifier

        return train_classifier(cfg, workdir)
    from training.evalnet import train_evalnet

    return train_evalnet(cfg, workdir)


if __name__ == "__main__":
    app.run(main)
