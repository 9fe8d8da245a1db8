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
- **No augmentation** here: background mixing (probability 0.8, volume up to 0.1) and random time
  shifts are training-time augmentations (recorded in ``metadata["paper_augmentation"]``).

Features are cached in ``<dataset dir>/.walkingnoise-cache/`` (or, when that directory is not
writable, ``~/.cache/walkingnoise/features/``), keyed by the feature and silence settings, the
loader version and a fingerprint of every WAV and list file (see :mod:`walkingnoise.data.cache`).
"""

from __future__ import annotations

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
from walkingnoise.data.cache import CACHE_DIR_NAME, ArrayCache, Fingerprint, fingerprint_files
from walkingnoise.data.cache import settings_key as make_settings_key
from walkingnoise.data.class_weights import inverse_density_weights
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import RemoteFile, locate_or_download
from walkingnoise.data.errors import DatasetFormatError, one_line
from walkingnoise.data.mfcc import MfccSettings, mfcc
from walkingnoise.data.registry import SPLIT_SEED, data_root, register_dataset
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
        text = path.read_text(encoding="utf-8")
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
    peak = float(samples.max()) if samples.size else 0.0
    if peak <= 0.0 and samples.size:
        peak = float(np.abs(samples).max())
    clip[: part.size] = part / peak if peak > 0.0 else part
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


def _silence_clips(
    backgrounds: Sequence[np.ndarray],
    split: str,
    count: int,
    settings: MfccSettings,
    volume: tuple[float, float],
    source: Path,
) -> np.ndarray:
    """``count`` silence clips of ``split`` cut from its region of the background recordings."""
    clip = settings.clip_samples
    start_fraction, end_fraction = SILENCE_REGIONS[split]
    regions = []
    for samples in backgrounds:
        lo, hi = int(len(samples) * start_fraction), int(len(samples) * end_fraction)
        if hi - lo >= clip:
            regions.append((samples, lo, hi))
    if count and not regions:
        raise DatasetFormatError(
            f"{source}: background recordings too short to cut {settings.clip_ms} ms silence "
            f"clips for the {split} split (each needs its {split} share of "
            f"{end_fraction - start_fraction:.0%} to span a clip)"
        )
    rng = np.random.default_rng([SPLIT_SEED, SPLITS.index(split)])
    out = np.empty((count, clip), dtype=np.float32)
    for i in range(count):
        samples, lo, hi = regions[i % len(regions)]
        offset = int(rng.integers(lo, hi - clip + 1))
        out[i] = prepare_clip(samples[offset : offset + clip], clip) * rng.uniform(*volume)
    return out


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
        n_keywords = int((labels < len(KEYWORDS)).sum())
        n_silence = math.ceil(silence_fraction * n_keywords)
        silence = _silence_clips(
            backgrounds,
            split,
            n_silence,
            settings,
            silence_volume,
            index.directory / BACKGROUND_DIR,
        )
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
    if cache_dir is None:
        arrays, hit, cache_path = build(), False, None
    else:
        files_key = fingerprint_files(directory, index.relpaths(), fingerprint)
        result = ArrayCache(cache_dir, "speech_commands").get_or_build(key, files_key, build)
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
        metadata={
            "normalization": None,
            "features": f"MFCC {settings.num_coefficients}x{settings.num_frames} (MLPerf Tiny KWS)",
            "paper_augmentation": "background noise mixed in with probability 0.8 at volume "
            "U(0, 0.1), random time shift (training only; MLPerf Tiny KWS)",
            "source": str(directory),
            "cache": {"hit": hit, "path": str(cache_path) if cache_path else None},
        },
    )
