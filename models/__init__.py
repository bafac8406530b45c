"""Score networks: the eps-to-score wrapper, a U-Net for images, an MLP for vectors, noisy classifiers."""

from .build import data_shape, make_net, make_score_model, make_sde_from_config
from .score import ScoreModel

__all__ = ["ScoreModel", "data_shape", "make_net", "make_score_model", "make_sde_from_config"]
