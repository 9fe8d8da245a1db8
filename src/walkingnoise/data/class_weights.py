"""Class weights for a weighted cross-entropy on imbalanced data (Speech Commands)."""

from __future__ import annotations

import torch

__all__ = ["inverse_density_weights"]


def inverse_density_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K,) float32 weights ``N / (K' · n_c)``: inverse class density, mean weight per sample 1.

    ``n_c`` is the count of class c in ``y``, ``N`` the total and ``K'`` the number of classes
    that occur; absent classes get weight 0. Frequent classes (Speech Commands' "unknown", about
    64 % of the recordings) are down-weighted, rare ones up-weighted, so every class
    contributes equally to the loss (scikit-learn's "balanced" weights).

    Example:
        >>> inverse_density_weights(torch.tensor([0, 0, 0, 1]), 3).tolist()
        [0.6666666865348816, 2.0, 0.0]
    """
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    counts = torch.bincount(y.to(torch.int64), minlength=num_classes).to(torch.float64)
    if counts.numel() > num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, found {int(y.max())}")
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.to(torch.float32)
