"""Per-layer weight statistics: the measure behind the paper's weight-growth finding."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized


@torch.no_grad()
def weight_statistics(model: nn.Module) -> dict[str, dict[str, float]]:
    """Mean |w|, max |w| and std of every module's ``weight``, keyed by module name.

    Walking Noise compares mean |w| of clamped and unclamped training under additive noise:
    layers followed by BatchNorm grow their weights to outgrow the noise. A parametrized
    weight (``torch.nn.utils.parametrize``) is left out, not computed: that could change its
    state (spectral norm's power iteration).
    """
    stats: dict[str, dict[str, float]] = {}
    for name, module in model.named_modules():
        if is_parametrized(module, "weight"):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.numel() == 0:
            continue
        w = weight.detach().double()
        stats[name] = {
            "mean_abs": w.abs().mean().item(),
            "max_abs": w.abs().max().item(),
            "std": w.std().item() if w.numel() > 1 else 0.0,
        }
    return stats
