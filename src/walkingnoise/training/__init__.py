"""Training and evaluation with noise: the recipe, the loop, evaluation, clamping, checkpoints."""

from walkingnoise.training.clamp import clamp_weights
from walkingnoise.training.evaluate import Evaluation, evaluate, evaluate_clean
from walkingnoise.training.loop import EpochRecord, TrainHistory, train_model
from walkingnoise.training.recipe import Recipe

__all__ = [
    "EpochRecord",
    "Evaluation",
    "Recipe",
    "TrainHistory",
    "clamp_weights",
    "evaluate",
    "evaluate_clean",
    "train_model",
]
