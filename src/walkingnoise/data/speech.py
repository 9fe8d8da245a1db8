"""Google Speech Commands v2 as the 12-class keyword-spotting task of MLPerf Tiny, as MFCCs.

Input: the extracted ``speech_commands_v0.02`` directory (one folder of 16 kHz mono WAVs per word,
``_background_noise_/``, ``validation_list.txt``, ``testing_list.txt``), found as given, in
torchvision/torchaudio's layout ``ROOT/SpeechCommands/speech_commands_v0.02/`` or in
``ROOT/speech_commands_v0.02/``.

Classes (in this order): the ten keywords yes, no, up, down, left, right, on, off, stop, go, then
``silence`` and ``unknown``.

- **Splits** are the official ones: files in ``validation_list.txt`` → validation, in
  ``testing_list.txt`` → test, every other recording → train (as torchaudio). MLPerf Tiny tests
  on the separately published, class-balanced ``speech_commands_test_set_v0.02`` (4,890 clips)
  instead; its test accuracy is therefore not directly comparable.
- **unknown** is every recording of the 25 other words, all of them kept, as MLPerf Tiny (via
  TensorFlow Datasets) does; they are about 64 % of the recordings. MLPerf's reference trains on
  this imbalance unweighted; the Walking Noise runs weight the loss by inverse class density
  (SPEC §3), so :attr:`InMemoryDataset.class_weights` holds those weights of the training split
  (unknown gets the smallest). TensorFlow's speech_commands example instead subsamples unknown
  to 10 %; not done here.
- **silence** clips are cut from the ``_background_noise_`` recordings. Each recording is divided
  by time into 80 % / 10 % / 10 % for train / validation / test, so no background audio is shared
  between splits. A split gets ``ceil(silence_fraction × its keyword clips)`` clips (default 10 %,
  about one keyword class, as in TensorFlow's speech_commands example and the official test set),
  taken round-robin over the recordings at offsets drawn from a fixed-seed generator: the same
  files always give the same clips. Each clip is scaled to peak 1 like every clip (MLPerf) and then
  by a volume drawn uniformly from ``silence_volume`` (default 0–1: TensorFlow's speech_commands
  example draws silence loudness that way; MLPerf feeds full-scale noise, ``(1.0, 1.0)``).
- **Waveforms → features** as MLPerf Tiny: float samples divided by their maximum (``x /
  max(x)``), zero-padded or cut to 1 s, then :func:`walkingnoise.data.mfcc.mfcc` (49 frames ×
  10 coefficients). The MLPerf time shift with fixed offset 2 is the identity and is omitted.
  Inputs are (N, 1, 10, 49): channel, coefficient, frame — what the ``cnn_s`` model takes.
- **Augmentation** (``Recipe.augment``): background mixing (probability 0.8, volume up to 0.1)
  and random time shifts of up to 100 ms, on the waveforms of the training clips, whose
  features are then computed again; silence clips become fresh stretches of background noise
  (:mod:`walkingnoise.data.speech_augmentation`). The loader itself never augments.

Features are cached in ``<dataset dir>/.walkingnoise-cache/`` (or, when that directory is not
writable, ``~/.cache/walkingnoise/features/``), keyed by the feature and silence settings, the
loader version and a fingerprint of every WAV and list file (see :mod:`walkingnoise.data.cache`).
The first augmented training stores the training split's waveforms there too (16-bit, about
2.8 GB for the full dataset), which every process then reads memory-mapped.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from walkingnoise._progress import bar_disabled
from walkingnoise.data.audio import read_wav, require_soundfile
from walkingnoise.data.cache import (
    CACHE_DIR_NAME,
    ArrayCache,
    Fingerprint,
    MappedArrayCache,
    fingerprint_files,
)
from walkingnoise.data.cache import settings_key as make_settings_key
from walkingnoise.data.class_weights import inverse_density_weights
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import RemoteFile, locate_or_download
from walkingnoise.data.errors import DatasetFormatError, one_line
from walkingnoise.data.mfcc import MfccSettings, mfcc
from walkingnoise.data.registry import SPLIT_SEED, data_root, register_dataset
from walkingnoise.data.speech_augmentation import ARRAYS, PCM_SCALE, SpeechAugmentation
from walkingnoise.data.status import DatasetStatus

__all__ = [
    "BACKGROUND_DIR",
    "KEYWORDS",
    "SPEECH_CLASS_NAMES",
    "SpeechIndex",
    "index_speech_commands",
    "load_speech_commands",
    "prepare_clip",
]

logger = logging.getLogger(__name__)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_CLASS_NAMES = (*KEYWORDS, "silence", "unknown")
SILENCE_LABEL = SPEECH_CLASS_NAMES.index("silence")
UNKNOWN_LABEL = SPEECH_CLASS_NAMES.index("unknown")
BACKGROUND_DIR = "_background_noise_"
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
SPLITS = ("train", "validation", "test")
SILENCE_REGIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
"""Fraction of every background recording (start, end) each split cuts its silence from."""

LOADER_VERSION = 1
"""Bumped whenever the features computed from the same files and settings change."""

_FOLDER = "speech_commands_v0.02"
_BATCH = 512


def _candidates(root: str | Path | None) -> list[Path]:
    """Directories that may be the extracted dataset, in search order."""
    base = data_root(root)
    return [base, base / "SpeechCommands" / _FOLDER, base / _FOLDER]


def _status(root: str | Path | None) -> DatasetStatus:
    """The first candidate directory holding both list files and the background recordings."""
    dirs = _candidates(root)
    needed = (*LIST_FILES.values(), f"{BACKGROUND_DIR}/")
    for directory in dirs:
        if all((directory / name).exists() for name in needed):
            return DatasetStatus("speech_commands", files=(directory,), searched=tuple(dirs))
    # Report what is missing where the dataset seems to be (else torchaudio's layout).
    best = next(
        (d for d in dirs if d.is_dir() and any((d / n).exists() for n in (*needed, *KEYWORDS))),
        dirs[1],
    )
    return DatasetStatus(
        "speech_commands",
        missing=tuple(name for name in needed if not (best / name).exists()),
        searched=tuple(dirs),
        hint=f"extract speech_commands_v0.02.tar.gz into {dirs[1]}/ (torchaudio's layout) or "
        "pass that directory as root",
    )


@dataclass(frozen=True)
class SpeechIndex:
    """The recordings of one extracted dataset: per split (relative path, label), sorted."""

    directory: Path
    splits: dict[str, list[tuple[str, int]]]
    background: list[str]
    list_files: list[str]

    def relpaths(self) -> list[str]:
        """Every file the features depend on: lists, background and split recordings, sorted."""
        words = [rel for items in self.splits.values() for rel, _ in items]
        return sorted([*self.list_files, *self.background, *words])


def _read_list(directory: Path, name: str, recordings: set[str]) -> set[str]:
    """Entries of a split list file, each checked to be one of the ``recordings``."""
    path = directory / name
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (some editors write one) is no name
    except UnicodeDecodeError as error:
        raise DatasetFormatError(f"{path}: not a UTF-8 text file ({one_line(error)})") from None
    entries = {line.strip().replace("\\", "/") for line in text.splitlines()}
    entries.discard("")
    absent = sorted(entries - recordings)
    if absent:
        raise DatasetFormatError(
            f"{path}: lists {len(absent)} recording(s) not in {directory}, e.g. {absent[0]}"
        )
    return entries


def index_speech_commands(directory: str | Path) -> SpeechIndex:
    """List every recording of an extracted Speech Commands directory with its split and label.

    Raises:
        DatasetFormatError: a keyword folder is missing, a list names an absent file, or there
            are no background recordings.
    """
    directory = Path(directory)
    words = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(("_", "."))
    )
    absent = [word for word in KEYWORDS if word not in words]
    if absent:
        raise DatasetFormatError(
            f"{directory}: no folder for keyword(s) {', '.join(absent)}; is this the extracted "
            "speech_commands_v0.02 directory?"
        )
    recordings = {
        f"{word}/{name}"
        for word in words
        for name in os.listdir(directory / word)
        if name.endswith(".wav")
    }
    validation = _read_list(directory, LIST_FILES["validation"], recordings)
    test = _read_list(directory, LIST_FILES["test"], recordings)
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    for rel in sorted(recordings):
        word = rel.split("/", 1)[0]
        label = KEYWORDS.index(word) if word in KEYWORDS else UNKNOWN_LABEL
        split = "test" if rel in test else "validation" if rel in validation else "train"
        splits[split].append((rel, label))
    background = sorted(
        f"{BACKGROUND_DIR}/{name}"
        for name in os.listdir(directory / BACKGROUND_DIR)
        if name.endswith(".wav")
    )
    if not background:
        raise DatasetFormatError(f"{directory / BACKGROUND_DIR}: no .wav recordings")
    return SpeechIndex(directory, splits, background, sorted(LIST_FILES.values()))


def prepare_clip(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """MLPerf's waveform step: divide by the maximum sample, then zero-pad or cut to the clip.

    The maximum, not the maximum magnitude, as MLPerf's ``x / reduce_max(x)``; a clip whose
    samples are all ≤ 0 is divided by its largest magnitude instead, an all-zero one left as is.
    """
    clip = np.zeros(clip_samples, dtype=np.float32)
    part = samples[:clip_samples].astype(np.float32)
    clip[: part.size] = part / _peak(samples)
    return clip


def _peak(samples: np.ndarray) -> float:
    """What :func:`prepare_clip` divides a recording by (1.0: left as is)."""
    peak = float(samples.max()) if samples.size else 0.0
    if peak <= 0.0 and samples.size:
        peak = float(np.abs(samples).max())
    return peak if peak > 0.0 else 1.0


def _pcm(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """The first ``clip_samples`` samples as 16-bit integers, zero-padded (exact for the
    16-bit WAVs of the dataset, whose float samples are integers / 32768)."""
    clip = np.zeros(clip_samples, dtype=np.int16)
    part = np.rint(samples[:clip_samples].astype(np.float64) * PCM_SCALE)
    clip[: part.size] = part.clip(-PCM_SCALE, PCM_SCALE - 1)
    return clip


def _features(clips: np.ndarray, settings: MfccSettings) -> np.ndarray:
    """(n, clip_samples) → (n, 1, coefficients, frames) float32."""
    coefficients = mfcc(torch.from_numpy(clips), settings)  # (n, frames, coefficients)
    return coefficients.transpose(1, 2).unsqueeze(1).contiguous().numpy()


def _word_features(
    index: SpeechIndex, split: str, settings: MfccSettings, progress: bool | None
) -> np.ndarray:
    """Features of every recording of ``split``, read and processed in batches."""
    items = index.splits[split]
    out = np.empty((len(items), 1, settings.num_coefficients, settings.num_frames), np.float32)
    with tqdm(
        total=len(items),
        desc=f"speech_commands {split}",
        unit="clip",
        disable=bar_disabled(progress),
        leave=False,
    ) as bar:
        for start in range(0, len(items), _BATCH):
            batch = items[start : start + _BATCH]
            clips = np.stack(
                [
                    prepare_clip(
                        read_wav(index.directory / rel, settings.sample_rate),
                        settings.clip_samples,
                    )
                    for rel, _ in batch
                ]
            )
            out[start : start + len(batch)] = _features(clips, settings)
            bar.update(len(batch))
    return out


@dataclass(frozen=True)
class _SilenceCut:
    """Where a silence clip is cut: background recording, first sample, and its volume."""

    recording: int
    offset: int
    volume: float


def _silence_cuts(
    backgrounds: Sequence[np.ndarray],
    split: str,
    count: int,
    settings: MfccSettings,
    volume: tuple[float, float],
    source: Path,
) -> list[_SilenceCut]:
    """Where the ``count`` silence clips of ``split`` lie in its region of the recordings."""
    clip = settings.clip_samples
    start_fraction, end_fraction = SILENCE_REGIONS[split]
    regions = []
    for r, samples in enumerate(backgrounds):
        lo, hi = int(len(samples) * start_fraction), int(len(samples) * end_fraction)
        if hi - lo >= clip:
            regions.append((r, lo, hi))
    if count and not regions:
        raise DatasetFormatError(
            f"{source}: background recordings too short to cut {settings.clip_ms} ms silence "
            f"clips for the {split} split (each needs its {split} share of "
            f"{end_fraction - start_fraction:.0%} to span a clip)"
        )
    rng = np.random.default_rng([SPLIT_SEED, SPLITS.index(split)])
    cuts = []
    for i in range(count):
        r, lo, hi = regions[i % len(regions)]
        offset = int(rng.integers(lo, hi - clip + 1))
        cuts.append(_SilenceCut(r, offset, rng.uniform(*volume)))
    return cuts


def _silence_clips(
    backgrounds: Sequence[np.ndarray], cuts: Sequence[_SilenceCut], clip: int
) -> np.ndarray:
    """The silence clips at ``cuts``: each scaled to peak 1, then by its volume."""
    out = np.empty((len(cuts), clip), dtype=np.float32)
    for i, cut in enumerate(cuts):
        segment = backgrounds[cut.recording][cut.offset : cut.offset + clip]
        out[i] = prepare_clip(segment, clip) * cut.volume
    return out


def _split_silence(
    index: SpeechIndex,
    split: str,
    backgrounds: Sequence[np.ndarray],
    settings: MfccSettings,
    silence_fraction: float,
    silence_volume: tuple[float, float],
) -> list[_SilenceCut]:
    """The silence clips of ``split``: :func:`_silence_count` cuts."""
    count = _silence_count(index, split, silence_fraction)
    source = index.directory / BACKGROUND_DIR
    return _silence_cuts(backgrounds, split, count, settings, silence_volume, source)


def _silence_count(index: SpeechIndex, split: str, silence_fraction: float) -> int:
    """``ceil(silence_fraction × the keyword clips of split)``."""
    n_keywords = sum(label < len(KEYWORDS) for _, label in index.splits[split])
    return math.ceil(silence_fraction * n_keywords)


def _build(
    index: SpeechIndex,
    settings: MfccSettings,
    silence_fraction: float,
    silence_volume: tuple[float, float],
    progress: bool | None,
) -> dict[str, np.ndarray]:
    """Read, process and featurize every split: arrays ``x_<split>`` and ``y_<split>``."""
    backgrounds = [
        read_wav(index.directory / rel, settings.sample_rate) for rel in index.background
    ]
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        labels = np.array([label for _, label in index.splits[split]], dtype=np.int64)
        cuts = _split_silence(index, split, backgrounds, settings, silence_fraction, silence_volume)
        n_silence = len(cuts)
        silence = _silence_clips(backgrounds, cuts, settings.clip_samples)
        arrays[f"x_{split}"] = np.concatenate(
            [_word_features(index, split, settings, progress), _features(silence, settings)]
        )
        arrays[f"y_{split}"] = np.concatenate(
            [labels, np.full(n_silence, SILENCE_LABEL, dtype=np.int64)]
        )
        logger.info(
            "speech_commands %s: %d recordings, %d silence clips", split, len(labels), n_silence
        )
    return arrays


@dataclass(frozen=True)
class _WaveformSource:
    """Where the training waveforms come from, and how to check what was read."""

    index: SpeechIndex
    settings: MfccSettings
    silence_fraction: float
    silence_volume: tuple[float, float]
    fingerprint: Fingerprint
    progress: bool | None
    cache: tuple[Path, str, str] | None
    """``(folder, settings key, files key)``, or None: built in memory."""


def _training_waveforms(source: _WaveformSource) -> dict[str, np.ndarray]:
    """The training split's clips in the order of its features, as
    :class:`~walkingnoise.data.speech_augmentation.SpeechAugmentation` reads them, and the
    training region of every background recording."""
    index, settings, progress = source.index, source.settings, source.progress
    silence_fraction, silence_volume = source.silence_fraction, source.silence_volume
    clip = settings.clip_samples
    backgrounds = [
        read_wav(index.directory / rel, settings.sample_rate) for rel in index.background
    ]
    items = index.splits["train"]
    cuts = _split_silence(index, "train", backgrounds, settings, silence_fraction, silence_volume)
    n = len(items) + len(cuts)
    samples = np.zeros((n, clip), dtype=np.int16)
    peaks = np.ones(n, dtype=np.float32)
    volumes = np.ones(n, dtype=np.float32)
    rounded = []
    for i, (rel, _) in enumerate(
        tqdm(
            items,
            desc="speech_commands train waveforms",
            unit="clip",
            disable=bar_disabled(progress),
            leave=False,
        )
    ):
        recording = read_wav(index.directory / rel, settings.sample_rate)
        samples[i], peaks[i] = _pcm(recording, clip), _peak(recording)
        kept = recording[:clip]
        if not np.array_equal(samples[i, : kept.size] / np.float32(PCM_SCALE), kept):
            rounded.append(rel)
    if rounded:
        logger.warning(
            "speech_commands: %d training recording(s) are not 16-bit PCM (e.g. %s); "
            "augmentation reads them rounded to 16 bits",
            len(rounded),
            rounded[0],
        )
    for i, cut in enumerate(cuts, start=len(items)):
        segment = backgrounds[cut.recording][cut.offset : cut.offset + clip]
        samples[i], peaks[i], volumes[i] = _pcm(segment, clip), _peak(segment), cut.volume
    start_fraction, end_fraction = SILENCE_REGIONS["train"]
    regions = [b[int(len(b) * start_fraction) : int(len(b) * end_fraction)] for b in backgrounds]
    ends = np.cumsum([len(r) for r in regions], dtype=np.int64)
    return {
        "samples": samples,
        "peaks": peaks,
        "volumes": volumes,
        "silence": np.arange(n) >= len(items),
        "background": np.concatenate(regions).astype(np.float32),
        "background_bounds": np.stack([ends - [len(r) for r in regions], ends], axis=1),
    }


def _augmentation_clips(source: _WaveformSource) -> dict[str, np.ndarray]:
    """The training waveforms, memory-mapped from the cache (built there on first use), or
    built in memory when there is no cache.

    Raises:
        DatasetFormatError: the files changed since the dataset was loaded (its features and
            the waveforms would disagree), or a cached entry lacks arrays or rows.
    """
    index = source.index

    def build() -> dict[str, np.ndarray]:
        logger.info(
            "speech_commands: reading the training waveforms for augmentation (once; cached)"
        )
        arrays = _training_waveforms(source)
        if source.cache is not None:
            now = fingerprint_files(index.directory, index.relpaths(), source.fingerprint)
            if now != source.cache[2]:
                raise DatasetFormatError(
                    f"{index.directory}: files changed since the dataset was loaded; load it "
                    "again before training with augmentation"
                )
        return arrays

    if source.cache is None:
        return build()
    folder, settings_key, files_key = source.cache
    result = MappedArrayCache(folder, "speech_commands-waveforms").get_or_build(
        settings_key, files_key, build
    )
    arrays = result.arrays
    missing = [name for name in ARRAYS if name not in arrays]
    n_train = len(index.splits["train"]) + _silence_count(index, "train", source.silence_fraction)
    if missing or arrays["samples"].shape != (n_train, source.settings.clip_samples):
        raise DatasetFormatError(
            f"{result.path}: a damaged waveform cache ("
            + (f"no {', '.join(missing)}" if missing else f"not {n_train} clips")
            + "); delete it to build it again"
        )
    return arrays


def _cache_dir(directory: Path, cache: bool | str | Path) -> Path | None:
    """Where features are cached: as given, next to the data, or in the user cache."""
    if cache is False:
        return None
    if cache is not True:
        return Path(cache)
    if os.access(directory, os.W_OK):
        return directory / CACHE_DIR_NAME
    return Path.home() / ".cache" / "walkingnoise" / "features"


@register_dataset("speech_commands", locate=_status)
def load_speech_commands(
    root: str | Path | None = None,
    *,
    mfcc_settings: MfccSettings | None = None,
    silence_fraction: float = 0.1,
    silence_volume: tuple[float, float] = (0.0, 1.0),
    cache: bool | str | Path = True,
    fingerprint: Fingerprint = "stat",
    download: bool | Sequence[RemoteFile] = False,
    progress: bool | None = None,
    background_frequency: float = 0.8,
    background_volume: float = 0.1,
    time_shift_ms: float = 100.0,
) -> InMemoryDataset:
    """Load Speech Commands v2 as MLPerf Tiny's 12-class task: (N, 1, 10, 49) MFCCs.

    Args:
        root: the extracted directory, or a root holding it (see the module docstring).
        mfcc_settings: feature settings (default: MLPerf Tiny's).
        silence_fraction: silence clips per split, as a fraction of its keyword clips.
        silence_volume: range of the uniform volume factor of silence clips.
        cache: True caches features next to the data, False never, a path caches there.
        fingerprint: how source files are recognised as unchanged: ``stat`` (size and mtime)
            or ``content`` (hash of every byte; slower).
        download: fetch and extract the official archive (2.4 GB) when missing.
        progress: progress bars while computing features (default: on a terminal).
        background_frequency, background_volume, time_shift_ms: the training augmentation
            (``Recipe.augment``; see :mod:`walkingnoise.data.speech_augmentation`): the share
            of clips that get background noise, its largest volume, and the largest time
            shift. The published values are the defaults.

    Raises:
        ImportError: soundfile is not installed (``pip install 'walkingnoise[speech]'``).
    """
    settings = mfcc_settings or MfccSettings()
    if silence_fraction < 0.0:
        raise ValueError(f"silence_fraction must be >= 0, got {silence_fraction}")
    low, high = silence_volume
    if not 0.0 <= low <= high:
        raise ValueError(
            f"silence_volume must be (low, high) with 0 <= low <= high, got {silence_volume}"
        )
    require_soundfile()
    status = locate_or_download("speech_commands", root, _status, download, progress=progress)
    directory = status.files[0]
    index = index_speech_commands(directory)
    key = make_settings_key(
        {
            "dataset": "speech_commands",
            "loader_version": LOADER_VERSION,
            "mfcc": asdict(settings),
            "silence_fraction": silence_fraction,
            "silence_volume": [float(low), float(high)],
            "silence_regions": SILENCE_REGIONS,
            "seed": SPLIT_SEED,
            "classes": SPEECH_CLASS_NAMES,
        }
    )

    def build() -> dict[str, np.ndarray]:
        return _build(index, settings, silence_fraction, (float(low), float(high)), progress)

    cache_dir = _cache_dir(directory, cache)
    waveform_cache = None
    if cache_dir is not None:
        files_key = fingerprint_files(directory, index.relpaths(), fingerprint)
        waveforms_key = make_settings_key({"waveforms_of": key, "format": 2})
        waveform_cache = (cache_dir, waveforms_key, files_key)
    augmentation = SpeechAugmentation(  # checks its settings before the features are built
        clips=functools.partial(
            _augmentation_clips,
            _WaveformSource(
                index,
                settings,
                silence_fraction,
                (float(low), float(high)),
                fingerprint,
                progress,
                waveform_cache,
            ),
        ),
        settings=settings,
        background_frequency=background_frequency,
        background_volume=background_volume,
        time_shift_ms=time_shift_ms,
        silence_volume=(float(low), float(high)),
    )
    if waveform_cache is None:
        arrays, hit, cache_path = build(), False, None
    else:
        folder, _, files_key = waveform_cache
        result = ArrayCache(folder, "speech_commands").get_or_build(key, files_key, build)
        arrays, hit, cache_path = result.arrays, result.hit, result.path
    splits = {
        split: Split(torch.from_numpy(arrays[f"x_{split}"]), torch.from_numpy(arrays[f"y_{split}"]))
        for split in SPLITS
    }
    return InMemoryDataset(
        name="speech_commands",
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        class_names=SPEECH_CLASS_NAMES,
        class_weights=inverse_density_weights(splits["train"].y, len(SPEECH_CLASS_NAMES)),
        augmentation=augmentation,
        metadata={
            "normalization": None,
            "features": f"MFCC {settings.num_coefficients}x{settings.num_frames} (MLPerf Tiny KWS)",
            "paper_augmentation": "background noise mixed in with probability 0.8 at volume "
            "U(0, 0.1), random time shift of up to 100 ms (training only; TensorFlow's "
            "speech_commands example, MLPerf Tiny KWS)",
            "source": str(directory),
            "cache": {"hit": hit, "path": str(cache_path) if cache_path else None},
        },
    )
