"""Training: losses, the training loop, checkpoints and EMA."""
