"""Tests for the MLPerf Tiny MFCC: shape, the formulas, and TensorFlow's numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data.mfcc import MfccSettings, dct_matrix, mel_weight_matrix, mfcc

TF_REFERENCE = Path(__file__).with_name("mfcc_tf_reference.npy")


def reference_clips() -> np.ndarray:
    """Two deterministic 1 s clips (a voiced sweep and a hiss, with a noise floor), peak 1.

    ``mfcc_tf_reference.npy`` holds their MFCCs computed with TensorFlow 2.21 by the MLPerf Tiny
    KWS code path (``tf.signal.stft`` 480/320, ``linear_to_mel_weight_matrix(40, 257, 16000,
    20, 4000)``, ``log(mel + 1e-6)``, ``mfccs_from_log_mel_spectrograms``, first 10).
    """
    n = np.arange(16000, dtype=np.float64)
    t = n / 16000
    noise = np.modf(np.abs(np.sin(n * 12.9898) * 43758.5453))[0] - 0.5
    voiced = sum(np.sin(2 * np.pi * 180 * h * t * (1 + 0.2 * t)) / h for h in range(1, 8))
    voiced = voiced * np.exp(-(((t - 0.5) / 0.2) ** 2)) + 0.02 * noise
    hiss = 0.3 * np.sin(2 * np.pi * 2500 * t + 40 * np.sin(2 * np.pi * 3 * t)) + 0.2 * noise
    return np.stack([voiced / voiced.max(), hiss / hiss.max()]).astype(np.float32)


def test_default_settings_are_mlperf_tiny() -> None:
    s = MfccSettings()
    assert (s.clip_samples, s.window_samples, s.hop_samples, s.fft_length) == (16000, 480, 320, 512)
    assert s.num_frames == 49
    assert s.shape == (49, 10)


def test_matches_tensorflow_reference() -> None:
    ours = mfcc(torch.from_numpy(reference_clips())).numpy()
    reference = np.load(TF_REFERENCE)
    assert ours.shape == reference.shape == (2, 49, 10)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)


def _numpy_mfcc(clip: np.ndarray) -> np.ndarray:
    """Straightforward float64 re-derivation, frame by frame, from the formulas."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(480) / 480)
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(4000.0), 42)
    bins = mel(np.linspace(0, 8000, 257))
    bank = np.zeros((257, 40))
    for m in range(40):
        lo, center, hi = edges[m], edges[m + 1], edges[m + 2]
        for b in range(1, 257):
            bank[b, m] = max(
                0.0, min((bins[b] - lo) / (center - lo), (hi - bins[b]) / (hi - center))
            )
    out = np.zeros((49, 10))
    for f in range(49):
        frame = clip[320 * f : 320 * f + 480] * window
        spectrum = np.abs(np.fft.rfft(frame, n=512))
        log_mel = np.log(spectrum @ bank + 1e-6)
        for k in range(10):
            out[f, k] = sum(
                2 * log_mel[n] * math.cos(math.pi * k * (2 * n + 1) / 80) for n in range(40)
            ) / math.sqrt(80)
    return out


def test_matches_a_plain_float64_derivation() -> None:
    clip = reference_clips()[0]
    np.testing.assert_allclose(mfcc(torch.from_numpy(clip)).numpy(), _numpy_mfcc(clip), atol=2e-4)


def test_mel_filterbank_shape_and_triangles() -> None:
    bank = mel_weight_matrix(40, 257, 16000, 20.0, 4000.0)
    assert bank.shape == (257, 40)
    assert bank.dtype == torch.float32
    assert torch.all(bank[0] == 0)  # DC bin zeroed
    assert torch.all(bank >= 0)
    assert torch.all(bank <= 1)
    hz_per_bin = 8000 / 256
    assert torch.all(bank[int(4000 / hz_per_bin) + 2 :] == 0)  # nothing above 4 kHz
    peaks = bank.argmax(dim=0)
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres increase with the band index


def test_dct_is_tensorflows_scaling() -> None:
    dct = dct_matrix(40, 10)
    assert dct.shape == (40, 10)
    torch.testing.assert_close(dct[:, 0], torch.full((40,), 2 / math.sqrt(80)))
    # Columns k >= 1 are orthogonal to the constant column.
    assert torch.allclose(dct[:, 1:].sum(dim=0), torch.zeros(9), atol=1e-5)


def test_tone_energy_lands_in_its_mel_band() -> None:
    t = torch.arange(16000) / 16000
    low = mfcc(torch.sin(2 * torch.pi * 300 * t))
    high = mfcc(torch.sin(2 * torch.pi * 3000 * t))
    assert low.shape == (49, 10)
    # Same energy, other band: the first coefficient (mean log energy) is close, the spectral
    # slope (coefficient 1) has opposite sign.
    assert low[:, 1].mean() > 0 > high[:, 1].mean()


def test_batches_and_silence_are_finite() -> None:
    batch = torch.zeros(3, 2, 16000)
    out = mfcc(batch)
    assert out.shape == (3, 2, 49, 10)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out[0, 0, 0, 0], torch.tensor(40 * math.log(1e-6) * 2 / math.sqrt(80))
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_ms": 2000}, "longer than clip_ms"),
        ({"upper_hz": 9000.0}, "upper_hz"),
        ({"num_coefficients": 41}, "num_coefficients"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MfccSettings(**kwargs)


def test_wrong_clip_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="16000 samples, got 8000"):
        mfcc(torch.zeros(8000))
