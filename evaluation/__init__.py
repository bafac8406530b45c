"""Drivers for sampling and evaluation: they load checkpoints, run the math packages, and write results."""
