"""Analysis of results: crossings of accuracy curves, statistics of trained weights."""

from walkingnoise.analysis.crossing import half_accuracy_crossing
from walkingnoise.analysis.weights import weight_statistics

__all__ = ["half_accuracy_crossing", "weight_statistics"]
