"""Per-site signal-to-noise ratio of a trained model's activations under a noise setting.

For every noise site i the activations leaving the site are recorded twice on the same inputs:
once with all noise off (the signal s) and once with the noise setting on (the noisy value y,
drawn ``repeats`` times). The site's SQNR in decibels is

    SQNR_i = 10 · log10( Σ s² / Σ (y − s)² )

summed over every element of every input (and, for the noise, averaged over the repeats). The
activations are taken *after* the site, so the noise at site i is what the site adds itself
plus what earlier sites' noise became on its way through the layers: a walking placement at
site k leaves sites before k noise-free (+∞ dB), and shows how layers after it amplify or
attenuate the noise. For additive noise of level σ at site i alone, Σ (y − s)² / N → σ², so
SQNR_i → 10·log10(P_s / σ²) with P_s the mean square of the clean activation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.models import NoiseLevel, NoiseModel
from walkingnoise.noise.placement import Placement
from walkingnoise.noise.recording import recording


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10·log10(signal/noise): +∞ without noise, NaN when both are 0."""
    if noise_power == 0:
        return math.inf if signal_power > 0 else math.nan
    if signal_power == 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


@torch.no_grad()
def sqnr_profile(
    model: NoisyModel,
    x: torch.Tensor,
    noise: NoiseModel,
    placement: Placement,
    sigma: NoiseLevel,
    *,
    repeats: int = 1,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> pd.DataFrame:
    """SQNR of the activations at every site of ``model`` on inputs ``x`` (see the module doc).

    The model runs in evaluation mode with ``noise`` (which must act in evaluation) placed by
    ``placement`` at ``sigma``; its own noise configuration, generator and train/eval mode are
    restored afterwards.

    Returns:
        One row per site: ``site``, ``site_name``, ``kind``, ``injects`` (the site adds noise
        itself), ``signal_power`` (mean s²), ``noise_power`` (mean (y − s)²), ``sqnr_db``,
        ``values_per_input`` (activation size), and the setting ``noise``, ``placement``, ``sigma``.
    """
    if not noise.evaluation:
        raise ValueError("the noise model of an SQNR profile must act in evaluation")
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    if len(x) == 0:
        raise ValueError("an SQNR profile needs at least one input")
    indices = list(range(len(model.sites)))
    signal = np.zeros(len(indices))
    error = np.zeros(len(indices))
    elements = np.zeros(len(indices), dtype=np.int64)
    was_training, saved_generator = model.training, model.generator
    model.eval()
    try:
        with model.noise_preserved():
            levels = model.set_noise(noise, placement, sigma)
            if generator is not None:
                model.set_generator(generator)
            for start in range(0, len(x), batch_size):
                batch = x[start : start + batch_size]
                with model.noise_disabled(), recording(model, indices) as records:
                    model(batch)
                clean = _single(records)
                for i in indices:
                    signal[i] += clean[i].double().square().sum().item()
                    elements[i] += clean[i].numel()
                for _ in range(repeats):
                    with recording(model, indices) as records:
                        model(batch)
                    noisy = _single(records)
                    for i in indices:
                        error[i] += (noisy[i].double() - clean[i].double()).square().sum().item()
    finally:
        model.train(was_training)
        model.set_generator(saved_generator)
    signal_power = signal / np.maximum(elements, 1)
    noise_power = error / np.maximum(elements * repeats, 1)
    rows = [
        {
            "site": info.index,
            "site_name": info.name,
            "kind": info.kind,
            "injects": info.index in levels,
            "signal_power": signal_power[i],
            "noise_power": noise_power[i],
            "sqnr_db": sqnr_db(signal_power[i], noise_power[i]),
            "values_per_input": int(elements[i] // len(x)),
            "noise": noise.name,
            "placement": str(placement),
            "sigma": sigma,
        }
        for i, info in enumerate(model.site_table)
    ]
    return pd.DataFrame(rows)


def _single(records: dict[int, list[torch.Tensor]]) -> dict[int, torch.Tensor]:
    """The one recorded output per site of a single forward pass."""
    out = {}
    for index, parts in records.items():
        if len(parts) != 1:
            raise ValueError(
                f"site {index} ran {len(parts)} times in one forward pass; a per-site SQNR "
                "needs each site to run once"
            )
        out[index] = parts[0]
    return out
