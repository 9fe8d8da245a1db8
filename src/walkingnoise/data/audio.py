"""Reading WAV recordings with soundfile (an optional dependency: ``pip install '.[speech]'``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from walkingnoise.data.errors import DatasetFormatError, one_line

__all__ = ["read_wav", "require_soundfile"]


def require_soundfile() -> ModuleType:
    """Import soundfile, or raise ImportError saying which extra installs it."""
    try:
        import soundfile
    except ImportError as error:
        raise ImportError(
            "reading speech recordings needs the optional dependency soundfile: "
            "pip install 'walkingnoise[speech]'"
        ) from error
    return soundfile


def read_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """Samples of a mono recording as float32 in [-1, 1) (16-bit PCM divided by 32768).

    Raises:
        DatasetFormatError: unreadable or cut-short file, another sample rate, or more than
            one channel.
    """
    soundfile = require_soundfile()
    path = Path(path)
    _check_data_chunk(path)
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:  # LibsndfileError is a RuntimeError
        raise DatasetFormatError(f"{path}: not a readable WAV file: {one_line(error)}") from error
    if rate != sample_rate:
        raise DatasetFormatError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    if samples.shape[1] != 1:
        raise DatasetFormatError(f"{path}: {samples.shape[1]} channels, expected mono")
    if not np.isfinite(samples).all():  # a float WAV may hold NaN or inf; PCM cannot
        raise DatasetFormatError(f"{path}: holds samples that are not finite (NaN or inf)")
    return samples[:, 0]


_UNKNOWN_LENGTH = 0xFFFFFFFF  # what a recorder that streams writes before it knows the length


def _check_data_chunk(path: Path) -> None:
    """Raise if a RIFF/WAVE file's ``data`` chunk declares more bytes than the file holds: a
    recording cut short, which libsndfile reads without complaint as a shorter one."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return  # not RIFF/WAVE: soundfile judges it
            position = 12
            while position + 8 <= size:
                file.seek(position)
                chunk = file.read(8)
                declared = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    held = size - position - 8
                    if declared != _UNKNOWN_LENGTH and declared > held:
                        raise DatasetFormatError(
                            f"{path}: cut short: its data chunk declares {declared} bytes, the "
                            f"file holds {held}"
                        )
                    return
                position += 8 + declared + (declared & 1)
    except OSError as error:
        raise DatasetFormatError(f"{path}: not a readable WAV file: {one_line(error)}") from error
