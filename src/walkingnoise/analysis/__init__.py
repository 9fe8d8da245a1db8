"""Analysis of results: statistics of trained weights, and (later) midpoint fits."""

from walkingnoise.analysis.weights import weight_statistics

__all__ = ["weight_statistics"]
