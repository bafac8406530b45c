"""Score networks: the eps-to-score wrapper, a U-Net for images, an MLP for vectors, noisy classifiers."""

from .score import ScoreModel

__all__ = ["ScoreModel"]
