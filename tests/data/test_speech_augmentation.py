"""Speech augmentation: time shift and background noise on the waveforms, then the features."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import DatasetFormatError, load_dataset
from walkingnoise.data.audio import read_wav
from walkingnoise.data.mfcc import MfccSettings, mfcc
from walkingnoise.data.speech import index_speech_commands, prepare_clip
from walkingnoise.data.speech_augmentation import (
    MixingDraws,
    SpeechAugmentation,
    _mixed_by_gathers,
    _mixed_by_rows,
)
from walkingnoise.experiment import Experiment
from walkingnoise.training.recipe import Recipe
from walkingnoise.training.run import train_experiment

SETTINGS = MfccSettings()
CLIP = SETTINGS.clip_samples
SHIFT = 1600  # 100 ms at 16 kHz
#: Training regions of three recordings: two longer than a clip, one too short to use.
REGIONS = (40_000, 8_000, 24_000)


def _synthetic(n: int = 6, seed: int = 0, regions: tuple[int, ...] = REGIONS):
    """Arrays as the speech loader stores them: 16-bit clips, their peaks and volumes (the last
    clip is silence), and background regions whose every sample tells where it lies (sample i
    holds i / 1e5 - 0.2, so that a stretch's peak is its last sample or, early on, its first)."""
    rng = np.random.default_rng(seed)
    ends = np.cumsum(regions)
    return {
        "samples": rng.integers(-20_000, 20_000, (n, CLIP)).astype(np.int16),
        "peaks": rng.uniform(0.3, 0.7, n).astype(np.float32),
        "volumes": np.r_[np.ones(n - 1), 0.25].astype(np.float32),
        "silence": np.arange(n) == n - 1,
        "background": (np.arange(ends[-1]) / 1e5 - 0.2).astype(np.float32),
        "background_bounds": np.stack([ends - np.array(regions), ends], axis=1),
    }


def _augmentation(arrays: dict[str, np.ndarray] | None = None, **options) -> SpeechAugmentation:
    loaded = _synthetic() if arrays is None else arrays
    return SpeechAugmentation(clips=lambda: loaded, settings=SETTINGS, **options)


def _features(clips: torch.Tensor) -> torch.Tensor:
    return mfcc(clips, SETTINGS).transpose(1, 2).unsqueeze(1)


def test_waveforms_are_samples_over_32768_over_peak_times_volume() -> None:
    arrays = _synthetic()
    clips = _augmentation(arrays).waveforms(torch.tensor([5, 0, 5]))
    for row, i in enumerate([5, 0, 5]):
        expected = (arrays["samples"][i] / np.float32(32768) / arrays["peaks"][i]).astype(
            np.float32
        ) * arrays["volumes"][i]
        np.testing.assert_array_equal(clips[row].numpy(), expected)


def test_draws_follow_the_published_distributions() -> None:
    b = 20_000
    words = torch.randint(0, 5, (b,), generator=torch.Generator().manual_seed(0))
    draws = _augmentation().draws(words, torch.Generator().manual_seed(1))
    assert not draws.fresh.any()
    # shifts: whole samples, uniform on [-1600, 1600) as numpy's randint(-shift, shift)
    assert int(draws.shifts.min()) == -SHIFT
    assert int(draws.shifts.max()) == SHIFT - 1
    shift_sd = math.sqrt(((2 * SHIFT) ** 2 - 1) / 12 / b)
    assert abs(draws.shifts.double().mean().item() + 0.5) < 4 * shift_sd
    # background: with probability 0.8, at a volume uniform on [0, 0.1)
    mixed_in = draws.volumes > 0
    share = mixed_in.double().mean().item()
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / b)
    volumes = draws.volumes[mixed_in].double()
    assert volumes.max().item() < 0.1
    assert abs(volumes.mean().item() - 0.05) < 4 * (0.1 / math.sqrt(12)) / math.sqrt(len(volumes))
    # each stretch lies inside one usable recording; the two usable ones are equally likely
    ends = np.cumsum(REGIONS)
    starts = draws.starts.numpy()
    inside = [(starts >= e - r) & (starts + CLIP <= e) for r, e in zip(REGIONS, ends, strict=True)]
    assert (inside[0] | inside[2]).all()
    assert not inside[1].any()
    assert abs(inside[0].mean() - 0.5) < 4 * math.sqrt(0.25 / b)
    # offsets uniform over the recording's possible starts, [0, region - clip)
    offsets = starts[inside[0]] - (ends[0] - REGIONS[0])
    span = REGIONS[0] - CLIP
    assert offsets.min() >= 0
    assert offsets.max() < span
    assert abs(offsets.mean() - span / 2) < 4 * span / math.sqrt(12 * len(offsets))


def test_silence_is_a_fresh_unshifted_stretch_at_the_silence_volume() -> None:
    b = 4_000
    augmentation = _augmentation(silence_volume=(0.2, 0.6))
    index = torch.tensor([5, 0] * (b // 2))  # row 5 is silence
    draws = augmentation.draws(index, torch.Generator().manual_seed(4))
    silence = index == 5
    assert torch.equal(draws.fresh, silence)
    assert not draws.shifts[silence].any()
    assert draws.shifts[~silence].any()
    loud = draws.volumes[silence].double()
    assert loud.min().item() >= 0.2
    assert loud.max().item() < 0.6
    assert abs(loud.mean().item() - 0.4) < 4 * (0.4 / math.sqrt(12)) / math.sqrt(len(loud))
    # the clip becomes the stretch scaled as the loader scales silence: peak 1, then volume
    background = _synthetic()["background"]
    clips = augmentation.waveforms(index[:6])
    few = MixingDraws(*(getattr(draws, f)[:6] for f in ("shifts", "starts", "volumes", "fresh")))
    out = augmentation.mixed(clips, few)
    for row in range(6):
        start, volume = int(few.starts[row]), few.volumes[row].numpy()
        if few.fresh[row]:
            expected = prepare_clip(background[start : start + CLIP], CLIP) * volume
            np.testing.assert_allclose(out[row].numpy(), expected, rtol=0, atol=1e-7)
        else:
            assert not torch.allclose(out[row], clips[row])  # shifted, maybe mixed


def test_a_region_must_be_longer_than_a_clip_and_offsets_stay_inside() -> None:
    augmentation = _augmentation(_synthetic(regions=(CLIP, CLIP + 1)), background_frequency=1.0)
    draws = augmentation.draws(torch.zeros(500, dtype=torch.long), torch.Generator())
    # the first region (exactly a clip) is never used; the second has one start: its first
    assert (draws.starts == CLIP).all()


def test_mixing_is_tensorflows_pad_slice_add_clip() -> None:
    augmentation = _augmentation()
    background = _synthetic()["background"]
    rng = np.random.default_rng(3)
    clips = torch.from_numpy(rng.uniform(-1.2, 1.2, (4, CLIP)).astype(np.float32))
    draws = MixingDraws(
        shifts=torch.tensor([0, 1599, -1600, 7]),
        starts=torch.tensor([0, 100, 50_000, 3]),
        volumes=torch.tensor([0.0, 0.09, 0.05, 0.0]),
        fresh=torch.zeros(4, dtype=torch.bool),
    )
    out = augmentation.mixed(clips.clone(), draws)
    for row in range(4):
        shift, start, volume = (int(draws.shifts[row]), int(draws.starts[row]), draws.volumes[row])
        x = clips[row].numpy()
        # TensorFlow: pad [shift, 0] and slice from 0, or pad [0, -shift] and slice from -shift
        padded = np.pad(x, (shift, 0)) if shift > 0 else np.pad(x, (0, -shift))
        sliced = padded[max(-shift, 0) :][:CLIP]
        expected = np.clip(sliced + background[start : start + CLIP] * volume.numpy(), -1, 1)
        np.testing.assert_allclose(out[row].numpy(), expected, rtol=0, atol=1e-7)


def test_whole_batch_mixing_off_the_cpu_equals_mixing_row_by_row() -> None:
    augmentation = _augmentation()
    background = torch.from_numpy(_synthetic()["background"])
    clips = augmentation.waveforms(torch.arange(6))
    draws = augmentation.draws(torch.arange(6), torch.Generator().manual_seed(2))
    assert bool(draws.volumes[~draws.fresh].any())
    assert bool(draws.fresh.any())
    rows = _mixed_by_rows(clips, draws, background)
    gathers = _mixed_by_gathers(clips, draws, background)
    torch.testing.assert_close(gathers, rows, rtol=2.4e-7, atol=1e-7)  # an ulp or two
    unmixed = MixingDraws(draws.shifts, draws.starts, draws.volumes * 0, draws.fresh & False)
    torch.testing.assert_close(
        _mixed_by_gathers(clips, unmixed, None),
        _mixed_by_rows(clips, unmixed, None),
        rtol=0,
        atol=0,
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_batch_is_augmented_there_as_on_the_cpu() -> None:
    augmentation = _augmentation()
    index = torch.tensor([1, 4, 4, 0])
    x = torch.zeros(4, 1, SETTINGS.num_coefficients, SETTINGS.num_frames)
    on_cpu = augmentation(x, torch.Generator().manual_seed(8), index=index)
    on_gpu = augmentation(x.cuda(), torch.Generator().manual_seed(8), index=index.cuda())
    assert on_gpu.device.type == "cuda"
    # cuFFT and the CPU's FFT round differently; the log of a quiet mel band magnifies that
    # (on an H100: 5 of 1,960 coefficients off by up to 1.5e-3)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=5e-3)


def test_a_batch_gets_the_features_of_its_mixed_clips() -> None:
    augmentation = _augmentation()
    index = torch.tensor([2, 2, 0, 5])
    x = torch.zeros(4, 1, SETTINGS.num_coefficients, SETTINGS.num_frames)
    out = augmentation(x, torch.Generator().manual_seed(5), index=index)
    draws = augmentation.draws(index, torch.Generator().manual_seed(5))
    expected = _features(augmentation.mixed(augmentation.waveforms(index), draws))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.allclose(out[0], out[1])  # one clip, two draws
    again = augmentation(x, torch.Generator().manual_seed(5), index=index)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    # Without shift and background a word's features are those of the clip, clipped to ±1.
    plain = _augmentation(background_frequency=0.0, time_shift_ms=0.0)
    index = torch.tensor([2, 2, 0, 4])
    clips = plain.waveforms(index)
    torch.testing.assert_close(
        plain(x, torch.Generator(), index=index), _features(clips.clamp(-1, 1)), rtol=0, atol=0
    )


def test_bad_batches_and_settings_are_refused() -> None:
    augmentation = _augmentation()
    x = torch.zeros(2, 1, SETTINGS.num_frames, SETTINGS.num_coefficients)  # transposed
    with pytest.raises(ValueError, match=r"features \(2, 1, 10, 49\), but the batch is"):
        augmentation(x, torch.Generator(), index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs the batch's positions"):
        augmentation(x, torch.Generator())
    for option, value in [
        ("background_frequency", 1.5),
        ("background_volume", -0.1),
        ("background_volume", float("inf")),
        ("time_shift_ms", float("nan")),
        ("time_shift_ms", 1000.0),
        ("silence_volume", (0.5, 0.2)),
    ]:
        with pytest.raises(ValueError, match=option):
            _augmentation(**{option: value})
    short = {**_synthetic(), "background_bounds": np.array([[0, 8_000]])}
    with pytest.raises(ValueError, match="no background recording is longer than a clip"):
        _augmentation(short).draws(torch.tensor([0, 1]), torch.Generator())
    # without mixing, words need no background; silence still does
    unmixed = _augmentation(short, background_frequency=0.0)
    assert not unmixed.draws(torch.tensor([0, 1]), torch.Generator()).volumes.any()
    with pytest.raises(ValueError, match="to mix in or to cut silence from"):
        unmixed.draws(torch.tensor([0, 5]), torch.Generator())


def test_a_pickled_augmentation_leaves_its_loaded_arrays_behind() -> None:
    augmentation = SpeechAugmentation(clips=_synthetic, settings=SETTINGS)
    augmentation.waveforms(torch.tensor([0]))
    copy = pickle.loads(pickle.dumps(augmentation))
    assert len(pickle.dumps(augmentation)) < 10_000
    torch.testing.assert_close(
        copy.waveforms(torch.tensor([1, 3])), augmentation.waveforms(torch.tensor([1, 3]))
    )


# --- on a tiny Speech Commands tree --------------------------------------------------------------


@pytest.fixture
def speech(speech_root: Path):
    pytest.importorskip("soundfile", reason="speech_commands needs the 'speech' extra")
    return load_dataset("speech_commands", speech_root)


def test_training_waveforms_are_the_clips_the_features_came_from(speech, speech_dir: Path) -> None:
    n = len(speech.train)
    clips = speech.augmentation.waveforms(torch.arange(n))
    torch.testing.assert_close(_features(clips), speech.train.x, rtol=0, atol=2e-5)
    first = index_speech_commands(speech_dir).splits["train"][0][0]
    expected = prepare_clip(read_wav(speech_dir / first, 16000), CLIP)
    np.testing.assert_array_equal(clips[0].numpy(), expected)
    silence = speech.train.y == speech.class_names.index("silence")
    assert int(silence.sum()) > 0
    assert int(silence[-int(silence.sum()) :].sum()) == int(silence.sum())  # silence last


def test_the_published_settings_and_the_training_regions_of_the_background(
    speech, speech_dir: Path
) -> None:
    augmentation = speech.augmentation
    assert (augmentation.background_frequency, augmentation.background_volume) == (0.8, 0.1)
    assert augmentation.time_shift_ms == 100.0
    assert augmentation.shift_samples == SHIFT
    assert augmentation.silence_volume == (0.0, 1.0)
    arrays = augmentation.clips()
    silence = speech.train.y == speech.class_names.index("silence")
    np.testing.assert_array_equal(arrays["silence"], silence.numpy())
    start = 0
    names = index_speech_commands(speech_dir).background
    assert len(arrays["background_bounds"]) == len(names)
    for name, (first, end) in zip(names, arrays["background_bounds"], strict=True):
        recording = read_wav(speech_dir / name, 16000)
        region = recording[: int(len(recording) * 0.8)]  # the training region, no more
        assert (first, end) == (start, start + len(region))
        np.testing.assert_array_equal(arrays["background"][first:end], region)
        start = end


def test_files_changed_after_loading_or_a_damaged_cache_are_refused(
    speech, speech_root: Path, speech_dir: Path
) -> None:
    first = index_speech_commands(speech_dir).splits["train"][0][0]
    info = (speech_dir / first).stat()
    os.utime(speech_dir / first, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    with pytest.raises(DatasetFormatError, match="changed since the dataset was loaded"):
        speech.augmentation.clips()
    fresh = load_dataset("speech_commands", speech_root)
    fresh.augmentation.clips()
    (entry,) = (speech_dir / ".walkingnoise-cache").glob("speech_commands-waveforms-*")
    (entry / "peaks.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"damaged waveform cache \(no peaks\)") as err:
        load_dataset("speech_commands", speech_root).augmentation.clips()
    assert str(err.value).startswith(f"{entry}: ")


def test_recordings_that_are_not_16_bit_are_named_once(
    speech_root: Path, speech_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    soundfile = pytest.importorskip("soundfile", reason="the .[speech] extra reads WAV files")
    first = index_speech_commands(speech_dir).splits["train"][0][0]
    soundfile.write(speech_dir / first, np.full(16000, 0.123456, np.float32), 16000, "FLOAT")
    with caplog.at_level(logging.WARNING, logger="walkingnoise.data.speech"):
        load_dataset("speech_commands", speech_root).augmentation.clips()
    warnings = [r.getMessage() for r in caplog.records if "16-bit" in r.getMessage()]
    assert warnings == [
        f"speech_commands: 1 training recording(s) are not 16-bit PCM (e.g. {first}); "
        "augmentation reads them rounded to 16 bits"
    ]


def test_waveforms_are_cached_once_memory_mapped_and_follow_the_files(
    speech, speech_root: Path, speech_dir: Path
) -> None:
    cache = speech_dir / ".walkingnoise-cache"
    assert not list(cache.glob("speech_commands-waveforms-*"))  # only built when used
    arrays = speech.augmentation.clips()
    entries = list(cache.glob("speech_commands-waveforms-*"))
    assert len(entries) == 1
    assert isinstance(arrays["samples"], np.memmap)
    assert arrays["samples"].shape == (len(speech.train), CLIP)
    again = load_dataset("speech_commands", speech_root).augmentation.clips()
    np.testing.assert_array_equal(again["samples"], arrays["samples"])
    assert list(cache.glob("speech_commands-waveforms-*")) == entries
    # a changed recording gives a new entry that replaces the old one
    first = index_speech_commands(speech_dir).splits["train"][0][0]
    info = (speech_dir / first).stat()
    os.utime(speech_dir / first, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    load_dataset("speech_commands", speech_root).augmentation.clips()
    replaced = list(cache.glob("speech_commands-waveforms-*"))
    assert len(replaced) == 1
    assert replaced != entries
    uncached = load_dataset("speech_commands", speech_root, cache=False).augmentation.clips()
    assert not isinstance(uncached["samples"], np.memmap)
    np.testing.assert_array_equal(uncached["samples"], arrays["samples"])


@pytest.mark.parametrize("seeds", [(3, 3), (3, 4)], ids=["shared-batches", "own-batches"])
def test_augmented_speech_trains_alike_alone_and_stacked(speech, seeds: tuple[int, int]) -> None:
    from walkingnoise.training.cohort import train_cohort

    recipe = Recipe(epochs=2, batch_size=8, augment=True)
    experiments = [
        Experiment(
            dataset="speech_commands",
            model="cnn_s",
            noise="additive",
            placement=f"walking:{site}",
            sigma=0.1,
            train_noise=True,
            seed=seed,
            recipe=recipe,
        )
        for site, seed in zip((1, 4), seeds, strict=True)
    ]
    stacked = train_cohort(experiments, speech)
    for result, experiment in zip(stacked, experiments, strict=True):
        _, alone = train_experiment(experiment, speech, progress=False)
        torch.testing.assert_close(
            [r.train_loss for r in result.history.epochs],
            [r.train_loss for r in alone.epochs],
            rtol=1e-3,
            atol=0,
        )
    _, plain = train_experiment(
        experiments[0], dataclasses.replace(speech, augmentation=None), progress=False
    )
    first = stacked[0].history.epochs[0].train_loss
    assert abs(plain.epochs[0].train_loss - first) > 1e-3 * first
