"""Tests for ``speech_commands`` on a tiny WAV tree: splits, classes, features, cache."""

from __future__ import annotations

import math
import os
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    inverse_density_weights,
    load_dataset,
)
from walkingnoise.data.mfcc import MfccSettings, mfcc
from walkingnoise.data.speech import SPEECH_CLASS_NAMES, index_speech_commands, prepare_clip

from .helpers import SPEECH_KEYWORDS, SPEECH_OTHER_WORDS, speech_clip, write_wav

pytest.importorskip("soundfile", reason="speech_commands needs the 'speech' extra")

N_WORDS = len(SPEECH_KEYWORDS) + len(SPEECH_OTHER_WORDS)
SILENCE, UNKNOWN = SPEECH_CLASS_NAMES.index("silence"), SPEECH_CLASS_NAMES.index("unknown")


def _load(root: Path, **options: object):
    return load_dataset("speech_commands", root, **options)


def _read_pcm(path: Path) -> np.ndarray:
    """Reference decoding with the standard library: int16 / 32768."""
    with wave.open(str(path)) as stream:
        return np.frombuffer(stream.readframes(stream.getnframes()), "<i2") / 32768.0


# --- splits and classes ------------------------------------------------------------------------


def test_splits_classes_and_shapes(speech_root: Path, speech_dir: Path) -> None:
    dataset = _load(speech_root, cache=False)
    assert dataset.class_names == (*SPEECH_KEYWORDS, "silence", "unknown")
    assert dataset.input_shape == (1, 10, 49)
    assert dataset.chance_accuracy == pytest.approx(1 / 12)
    # 4 clips per word: clip 1 validation, clip 2 test, clips 0 and 3 train; silence is
    # ceil(10 % of the keyword clips) of each split.
    expected = {"train": 2 * N_WORDS + 2, "validation": N_WORDS + 1, "test": N_WORDS + 1}
    for split, n in expected.items():
        part = dataset.split(split)
        assert len(part) == n, split
        counts = torch.bincount(part.y, minlength=12).tolist()
        per_word = 2 if split == "train" else 1
        assert counts[:10] == [per_word] * 10
        assert counts[UNKNOWN] == per_word * len(SPEECH_OTHER_WORDS)
        assert counts[SILENCE] == math.ceil(0.1 * 10 * per_word)
        assert part.x.dtype == torch.float32
        assert torch.isfinite(part.x).all()
    index = index_speech_commands(speech_dir)
    listed = (speech_dir / "testing_list.txt").read_text().split()
    assert sorted(rel for rel, _ in index.splits["test"]) == sorted(listed)


def test_class_weights_are_inverse_density_of_train(speech_root: Path) -> None:
    dataset = _load(speech_root, cache=False)
    weights = dataset.class_weights
    assert weights is not None
    torch.testing.assert_close(weights, inverse_density_weights(dataset.train.y, 12))
    # unknown (two words) is down-weighted against each keyword.
    assert weights[UNKNOWN] == pytest.approx(weights[0] / 2)
    # Every class then contributes the same total weight.
    counts = torch.bincount(dataset.train.y, minlength=12).float()
    torch.testing.assert_close(weights * counts, torch.full((12,), float(len(dataset.train)) / 12))


def test_features_are_mfcc_of_the_peak_normalized_padded_clip(
    speech_root: Path, speech_dir: Path
) -> None:
    dataset = _load(speech_root, cache=False)
    tests = sorted((speech_dir / "testing_list.txt").read_text().split())
    first = speech_dir / tests[0]  # test rows: listed recordings in path order, then silence
    samples = _read_pcm(first)
    assert len(samples) == 16800  # longer than 1 s: cut
    clip = samples[:16000] / samples.max()
    expected = mfcc(torch.from_numpy(clip.astype(np.float32))).T.unsqueeze(0)
    torch.testing.assert_close(dataset.test.x[0], expected, rtol=0, atol=1e-4)


def test_silence_is_deterministic_and_scaled(speech_root: Path) -> None:
    a = _load(speech_root, cache=False)
    b = _load(speech_root, cache=False)
    silence = a.test.y == SILENCE
    assert silence.sum() == 1
    assert torch.equal(a.test.x[silence], b.test.x[silence])
    loud = _load(speech_root, cache=False, silence_volume=(1.0, 1.0))
    assert not torch.equal(loud.test.x[silence], a.test.x[silence])
    # A quieter clip has lower log energy (coefficient 0 is the scaled mean log mel energy).
    assert loud.test.x[silence][0, 0, 0].mean() > a.test.x[silence][0, 0, 0].mean()


def test_silence_can_be_switched_off(speech_root: Path) -> None:
    dataset = _load(speech_root, cache=False, silence_fraction=0.0)
    assert (dataset.train.y == SILENCE).sum() == 0
    assert dataset.class_weights[SILENCE] == 0.0
    assert len(dataset.test) == N_WORDS


def test_root_may_be_the_extracted_directory(speech_dir: Path) -> None:
    assert len(_load(speech_dir, cache=False).validation) == N_WORDS + 1


def test_prepare_clip_pads_cuts_and_scales() -> None:
    padded = prepare_clip(np.array([0.1, -0.4, 0.2]), 5)
    np.testing.assert_allclose(padded, [0.5, -2.0, 1.0, 0.0, 0.0])  # divided by max, not |max|
    cut = prepare_clip(np.arange(10, dtype=np.float32), 4)
    np.testing.assert_allclose(cut, [0, 1 / 9, 2 / 9, 3 / 9], rtol=1e-6)
    negative = prepare_clip(np.array([-0.5, -0.25]), 2)
    np.testing.assert_allclose(negative, [-1.0, -0.5])
    assert prepare_clip(np.zeros(3), 4).tolist() == [0, 0, 0, 0]


# --- missing and corrupted files ------------------------------------------------------------


def test_without_soundfile_the_error_names_the_extra(
    speech_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'walkingnoise\[speech\]'"):
        _load(speech_root, cache=False)


def test_missing_dataset_says_where_to_extract(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        _load(tmp_path)
    message = str(err.value)
    assert "validation_list.txt" in message
    assert str(tmp_path / "SpeechCommands" / "speech_commands_v0.02") in message
    assert "\n" not in message


def test_missing_lists_are_reported_where_the_recordings_are(speech_dir: Path) -> None:
    (speech_dir / "testing_list.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        _load(speech_dir)
    assert err.value.missing == ("testing_list.txt",)


def test_corrupt_wav_is_named(speech_root: Path, speech_dir: Path) -> None:
    bad = speech_dir / "yes" / sorted(os.listdir(speech_dir / "yes"))[0]
    bad.write_bytes(b"RIFF....WAVEgarbage")
    with pytest.raises(DatasetFormatError, match="not a readable WAV file") as err:
        _load(speech_root, cache=False)
    assert str(err.value).startswith(f"{bad}: ")
    assert "\n" not in str(err.value)


def test_a_wav_cut_short_is_named(speech_root: Path, speech_dir: Path) -> None:
    """libsndfile reads a recording whose data chunk lacks bytes as a shorter one; the
    loader would pad it to a second of silence, so the header's length is checked."""
    bad = speech_dir / "yes" / sorted(os.listdir(speech_dir / "yes"))[0]
    whole = bad.read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetFormatError, match="cut short: its data chunk declares") as err:
        _load(speech_root, cache=False)
    assert str(err.value).startswith(f"{bad}: ")


@pytest.mark.parametrize(("rate", "channels", "match"), [(8000, 1, "8000 Hz"), (16000, 2, "2 ch")])
def test_wrong_rate_or_channels_is_named(
    speech_root: Path, speech_dir: Path, rate: int, channels: int, match: str
) -> None:
    bad = speech_dir / "no" / sorted(os.listdir(speech_dir / "no"))[0]
    write_wav(bad, np.zeros(8000 * channels), rate=rate, channels=channels)
    with pytest.raises(DatasetFormatError, match=match) as err:
        _load(speech_root, cache=False)
    assert str(err.value).startswith(f"{bad}: ")


def test_list_naming_an_absent_recording(speech_root: Path, speech_dir: Path) -> None:
    listed = speech_dir / "validation_list.txt"
    listed.write_text(listed.read_text() + "yes/ffffffff_nohash_9.wav\n")
    with pytest.raises(DatasetFormatError, match=r"yes/ffffffff_nohash_9\.wav") as err:
        _load(speech_root, cache=False)
    assert str(err.value).startswith(f"{listed}: lists 1 recording(s) not in ")


def test_a_list_that_is_not_utf8_is_named(speech_root: Path, speech_dir: Path) -> None:
    listed = speech_dir / "testing_list.txt"
    listed.write_bytes(listed.read_bytes() + b"yes/caf\xe9.wav\n")
    with pytest.raises(DatasetFormatError, match="not a UTF-8 text file") as err:
        _load(speech_root, cache=False)
    assert str(err.value).startswith(f"{listed}: ")


def test_a_list_saved_with_a_byte_order_mark_reads_as_without(
    speech_root: Path, speech_dir: Path
) -> None:
    """An editor that saves UTF-8 with a BOM (Windows Notepad) must not make the first entry
    an unknown recording whose name, printed, looks like one that is there."""
    plain = _load(speech_root, cache=False)
    listed = speech_dir / "validation_list.txt"
    listed.write_bytes(b"\xef\xbb\xbf" + listed.read_bytes().replace(b"\n", b"\r\n"))
    marked = _load(speech_root, cache=False)
    assert torch.equal(marked.validation.y, plain.validation.y)
    assert torch.equal(marked.train.x, plain.train.x)


def test_a_float_wav_with_nan_is_named(speech_root: Path, speech_dir: Path) -> None:
    """A float WAV can hold NaN, which would become NaN features in training."""
    soundfile = pytest.importorskip("soundfile", reason="the .[speech] extra reads WAV files")
    bad = speech_dir / "no" / sorted(os.listdir(speech_dir / "no"))[0]
    samples = np.zeros(16000, dtype=np.float32)
    samples[100] = np.nan
    soundfile.write(bad, samples, 16000, subtype="FLOAT")
    with pytest.raises(DatasetFormatError, match="not finite") as err:
        _load(speech_root, cache=False)
    assert str(err.value).startswith(f"{bad}: ")


def test_missing_keyword_folder(speech_root: Path, speech_dir: Path) -> None:
    shutil.rmtree(speech_dir / "stop")
    with pytest.raises(DatasetFormatError, match="no folder for keyword"):
        _load(speech_root, cache=False)


def test_background_too_short_for_the_test_region(speech_root: Path, speech_dir: Path) -> None:
    for path in (speech_dir / "_background_noise_").glob("*.wav"):
        write_wav(path, np.zeros(16000 * 5))  # 10 % of 5 s is shorter than a clip
    with pytest.raises(DatasetFormatError, match="too short"):
        _load(speech_root, cache=False)


# --- cache ----------------------------------------------------------------------------------


def test_cache_hit_miss_and_setting_invalidation(speech_root: Path, speech_dir: Path) -> None:
    first = _load(speech_root)
    assert first.metadata["cache"]["hit"] is False
    path = Path(first.metadata["cache"]["path"])
    assert path.parent == speech_dir / ".walkingnoise-cache"
    assert path.is_file()
    second = _load(speech_root)
    assert second.metadata["cache"] == {"hit": True, "path": str(path)}
    for split in ("train", "validation", "test"):
        assert torch.equal(first.split(split).x, second.split(split).x)
        assert torch.equal(first.split(split).y, second.split(split).y)
    other = _load(speech_root, mfcc_settings=MfccSettings(num_coefficients=13))
    assert other.metadata["cache"]["hit"] is False
    assert other.input_shape == (1, 13, 49)
    assert _load(speech_root, silence_volume=(1.0, 1.0)).metadata["cache"]["hit"] is False
    assert _load(speech_root).metadata["cache"]["hit"] is True  # first entry still there


def test_changed_recording_invalidates_and_replaces_entry(
    speech_root: Path, speech_dir: Path
) -> None:
    before = _load(speech_root)
    old_path = Path(before.metadata["cache"]["path"])
    changed = speech_dir / "go" / sorted(os.listdir(speech_dir / "go"))[0]
    write_wav(changed, speech_clip(0, 0, 16000))  # another recording, other mtime
    after = _load(speech_root)
    assert after.metadata["cache"]["hit"] is False
    assert not old_path.exists()  # the stale entry of these settings was removed
    assert not torch.equal(before.train.x, after.train.x)


def test_stat_fingerprint_misses_silent_edits_content_catches_them(
    speech_root: Path, speech_dir: Path
) -> None:
    _load(speech_root)
    victim = speech_dir / "up" / sorted(os.listdir(speech_dir / "up"))[0]
    info = victim.stat()
    victim.write_bytes(b"\0" * info.st_size)  # same size ...
    os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))  # ... same mtime
    assert _load(speech_root).metadata["cache"]["hit"] is True  # no WAV was read
    with pytest.raises(DatasetFormatError, match="not a readable WAV file"):
        _load(speech_root, fingerprint="content")


def test_cache_in_a_given_directory(speech_root: Path, tmp_path: Path) -> None:
    where = tmp_path / "features"
    dataset = _load(speech_root, cache=where)
    assert Path(dataset.metadata["cache"]["path"]).parent == where
    assert _load(speech_root, cache=where).metadata["cache"]["hit"] is True
