"""Training augmentation of keyword spotting: time shift and background noise on the waveforms.

TensorFlow's speech_commands example, whose input pipeline MLPerf Tiny KWS and the Walking Noise
paper follow, augments every training clip before computing its features: the clip is shifted
in time by a whole number of samples drawn uniformly from [-shift, shift) (100 ms; the gap is
zero-filled), a one-second stretch of a randomly chosen background recording at a random offset
is mixed in at a volume drawn from U(0, 0.1) with probability 0.8 (else at volume 0), and the sum
is clipped to [-1, 1]. A silence clip has no foreground to shift: it becomes a fresh stretch of
background noise at a volume of its own. The features are then computed again from the clip.

Silence here is scaled as the dataset's silence clips are (see :mod:`walkingnoise.data.speech`):
the stretch to peak 1, then by a volume drawn from the loader's ``silence_volume`` (default
U(0, 1), as TensorFlow's example draws silence loudness), so augmented silence has the loudness
of the validation and test silence.

The clips come from the training split's waveforms, which the dataset keeps memory-mapped next to
its feature cache (built once, on the first augmented batch): 16-bit samples with each clip's
peak and volume, so that a clip is ``samples / 32768 / peak * volume``, the waveform its cached
features were computed from. Background noise is taken from the training region of each
background recording only (the first 80 %), so no validation or test silence is heard in
training. A batch's clips are gathered on the CPU and moved to the training device as 16-bit
samples; shifting, mixing and the features run there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from walkingnoise.data.mfcc import MfccSettings, mfcc

__all__ = ["MixingDraws", "SpeechAugmentation"]

PCM_SCALE = 32768.0
"""16-bit samples are stored as ``round(x × 32768)``, as a 16-bit WAV holds them."""

ARRAYS = ("samples", "peaks", "volumes", "silence", "background", "background_bounds")
"""What :attr:`SpeechAugmentation.clips` loads."""


@dataclass
class SpeechAugmentation:
    """Shift each clip in time, mix background noise into it, and compute its MFCCs again.

    Attributes:
        clips: loads the training waveforms (called once, on the first batch): arrays
            ``samples`` (N, clip) int16, ``peaks`` (N,) and ``volumes`` (N,) float32,
            ``silence`` (N,) bool, and ``background`` (all recordings' training regions, one
            after another) with ``background_bounds`` (R, 2), each region's [start, end).
        settings: the feature settings of the dataset.
        background_frequency: probability that a clip gets background noise.
        background_volume: the largest volume of the noise mixed in (uniform from 0).
        time_shift_ms: clips move by up to this much, earlier or later (less than a clip).
        silence_volume: (low, high) of the uniform volume of a fresh silence clip.
    """

    clips: Callable[[], Mapping[str, np.ndarray]]
    settings: MfccSettings
    background_frequency: float = 0.8
    background_volume: float = 0.1
    time_shift_ms: float = 100.0
    silence_volume: tuple[float, float] = (0.0, 1.0)
    _loaded: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_frequency <= 1.0:
            raise ValueError(
                f"background_frequency must be in [0, 1], got {self.background_frequency}"
            )
        if not (math.isfinite(self.background_volume) and self.background_volume >= 0.0):
            raise ValueError(
                f"background_volume must be finite and ≥ 0, got {self.background_volume}"
            )
        if not 0.0 <= self.time_shift_ms < self.settings.clip_ms:
            raise ValueError(
                f"time_shift_ms must be ≥ 0 and shorter than a clip ({self.settings.clip_ms} "
                f"ms), got {self.time_shift_ms}"
            )
        low, high = self.silence_volume
        if not (math.isfinite(high) and 0.0 <= low <= high):
            raise ValueError(
                f"silence_volume must be (low, high) with 0 <= low <= high, finite, got "
                f"{self.silence_volume}"
            )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded (memory-mapped) arrays; a copy loads them again."""
        return {**self.__dict__, "_loaded": None}

    @property
    def shift_samples(self) -> int:
        """The largest time shift in samples."""
        return round(self.time_shift_ms * self.settings.sample_rate / 1000)

    def _arrays(self) -> dict[str, Any]:
        if self._loaded is None:
            arrays = self.clips()
            bounds = np.asarray(arrays["background_bounds"], dtype=np.int64).reshape(-1, 2)
            self._loaded = {
                "samples": arrays["samples"],
                "peaks": torch.from_numpy(np.array(arrays["peaks"], dtype=np.float32)),
                "volumes": torch.from_numpy(np.array(arrays["volumes"], dtype=np.float32)),
                "silence": torch.from_numpy(np.array(arrays["silence"], dtype=np.bool_)),
                "background": torch.from_numpy(np.array(arrays["background"], np.float32)),
                "starts": torch.from_numpy(bounds[:, 0].copy()),
                "lengths": torch.from_numpy(bounds[:, 1] - bounds[:, 0]),
            }
        return self._loaded

    def waveforms(self, index: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """The training clips at ``index`` (B,) as the features were computed from: (B, clip),
        on ``device`` (gathered on the CPU; moved as 16-bit samples)."""
        arrays = self._arrays()
        rows = index.detach().to("cpu", torch.int64)
        samples = torch.from_numpy(np.asarray(arrays["samples"][rows.numpy()])).to(device)
        clips = samples.to(torch.float32).div_(PCM_SCALE)
        clips.div_(arrays["peaks"][rows].to(device).unsqueeze(1))
        return clips.mul_(arrays["volumes"][rows].to(device).unsqueeze(1))

    def _background_on(self, device: torch.device) -> torch.Tensor:
        """The background regions on ``device``, moved there once."""
        arrays = self._arrays()
        key = f"background@{device}"
        if key not in arrays:
            arrays[key] = arrays["background"].to(device)
        return arrays[key]

    def draws(self, index: torch.Tensor, generator: torch.Generator) -> MixingDraws:
        """The random choices for the clips at ``index`` (B,), drawn from ``generator``."""
        b = len(index)
        shift = self.shift_samples
        if shift > 0:
            shifts = torch.randint(-shift, shift, (b,), generator=generator)
        else:
            shifts = torch.zeros(b, dtype=torch.int64)
        arrays = self._arrays()
        fresh = arrays["silence"][index.detach().to("cpu", torch.int64)]
        mixes = self.background_frequency > 0.0 and self.background_volume > 0.0
        volumes = torch.zeros(b)
        starts = torch.zeros(b, dtype=torch.int64)
        if mixes or bool(fresh.any()):
            lengths, first = arrays["lengths"], arrays["starts"]
            clip = self.settings.clip_samples
            usable = (lengths > clip).nonzero().squeeze(1)
            if len(usable) == 0:
                raise ValueError(
                    "speech augmentation: no background recording is longer than a clip in its "
                    "training region, to mix in or to cut silence from"
                )
            recording = usable[torch.randint(0, len(usable), (b,), generator=generator)]
            spans = (lengths[recording] - clip).to(torch.float64)
            offsets = (torch.rand(b, generator=generator, dtype=torch.float64) * spans).long()
            starts = first[recording] + offsets
            mixed_in = torch.rand(b, generator=generator) < self.background_frequency
            volumes = torch.rand(b, generator=generator) * self.background_volume * mixed_in
            low, high = self.silence_volume
            loudness = torch.rand(b, generator=generator) * (high - low) + low
            volumes = torch.where(fresh, loudness, volumes)
        return MixingDraws(shifts.masked_fill(fresh, 0), starts, volumes, fresh)

    def mixed(self, clips: torch.Tensor, draws: MixingDraws) -> torch.Tensor:
        """Clips (B, clip) shifted, with background noise added (fresh for silence), clipped
        to [-1, 1]; on the clips' device (row by row on the CPU, by whole-batch gathers
        elsewhere)."""
        noisy = bool(draws.volumes.any()) or bool(draws.fresh.any())
        background = self._background_on(clips.device) if noisy else None
        by = _mixed_by_rows if clips.device.type == "cpu" else _mixed_by_gathers
        return by(clips, draws, background).clamp_(-1.0, 1.0)

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The features of the augmented clips at ``index``, shaped and placed as ``x``."""
        if index is None:
            raise ValueError("SpeechAugmentation needs the batch's positions in the training split")
        draws = self.draws(index, generator)
        clips = self.mixed(self.waveforms(index, x.device), draws)
        features = mfcc(clips, self.settings).transpose(1, 2).unsqueeze(1)
        if features.shape != x.shape:
            raise ValueError(
                f"speech augmentation gives features {tuple(features.shape)}, but the batch "
                f"is {tuple(x.shape)}: were the dataset's features computed with other settings?"
            )
        return features.to(device=x.device, dtype=x.dtype)


@dataclass(frozen=True)
class MixingDraws:
    """The random choices of one batch, per clip.

    Attributes:
        shifts: (B,) samples the clip moves later (earlier if negative); 0 for silence.
        starts: (B,) where its stretch of background noise starts in the concatenated
            training regions.
        volumes: (B,) the volume of that noise; 0 for the clips that get none.
        fresh: (B,) the clip is silence: it becomes the stretch, scaled to peak 1 and then
            by its volume, instead of getting it added.
    """

    shifts: torch.Tensor
    starts: torch.Tensor
    volumes: torch.Tensor
    fresh: torch.Tensor


def _peak_normalized(stretches: torch.Tensor) -> torch.Tensor:
    """Each row divided by its maximum (by its largest magnitude where that is ≤ 0; an
    all-zero row as it is), as the dataset's clips are."""
    peak = stretches.amax(dim=-1, keepdim=True)
    peak = torch.where(peak > 0, peak, stretches.abs().amax(dim=-1, keepdim=True))
    return stretches / torch.where(peak > 0, peak, torch.ones_like(peak))


def _mixed_by_rows(
    clips: torch.Tensor, draws: MixingDraws, background: torch.Tensor | None
) -> torch.Tensor:
    """Shift and mix one row at a time: slices, no index tensors (fastest on a CPU)."""
    out = torch.empty_like(clips)
    length = clips.shape[1]
    for row, shift in enumerate(draws.shifts.tolist()):
        if shift >= 0:
            out[row, :shift] = 0.0
            out[row, shift:] = clips[row, : length - shift]
        else:
            out[row, shift:] = 0.0
            out[row, :shift] = clips[row, -shift:]
    if background is None:
        return out
    fresh = draws.fresh.tolist()
    for row in (draws.volumes.ne(0) | draws.fresh).nonzero().squeeze(1).tolist():
        start = int(draws.starts[row])
        stretch = background[start : start + length]
        if fresh[row]:
            out[row] = _peak_normalized(stretch) * draws.volumes[row]
        else:
            out[row].add_(stretch, alpha=float(draws.volumes[row]))
    return out


def _mixed_by_gathers(
    clips: torch.Tensor, draws: MixingDraws, background: torch.Tensor | None
) -> torch.Tensor:
    """Shift and mix the whole batch with two gathers: a few kernels in all (for a GPU)."""
    length = clips.shape[1]
    positions = torch.arange(length, device=clips.device)
    source = positions - draws.shifts.to(clips.device).unsqueeze(1)
    inside = (source >= 0) & (source < length)
    out = clips.gather(1, source.clamp_(0, length - 1)).mul_(inside)
    if background is None:
        return out
    stretches = background[draws.starts.to(clips.device).unsqueeze(1) + positions]
    volumes = draws.volumes.to(clips.device).unsqueeze(1)
    fresh = draws.fresh.to(clips.device).unsqueeze(1)
    return torch.where(fresh, _peak_normalized(stretches) * volumes, out + stretches * volumes)
