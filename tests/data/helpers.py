"""Helpers shared by the data tests: MNIST file names and an IDX encoder."""

from __future__ import annotations

import numpy as np

T10K_IMAGES = "t10k-images-idx3-ubyte"
T10K_LABELS = "t10k-labels-idx1-ubyte"

_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def encode_idx(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format (magic, big-endian dims, big-endian payload)."""
    header = bytes([0, 0, _TYPE_CODES[array.dtype], array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


# --- CIFAR-10: Python 2 pickles as published ------------------------------------------------


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), read back as bytes with encoding=bytes."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + len(data).to_bytes(4, "little") + data


def _py2_int(value: int) -> bytes:
    """BININT1 / BININT2 / BININT, as cPickle writes small non-negative and other ints."""
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + value.to_bytes(2, "little")
    return b"J" + value.to_bytes(4, "little", signed=True)


def _py2_value(obj: object) -> bytes:
    """Opcodes of one value: bytes (py2 str), int, list, dict or a C-ordered uint8 ndarray."""
    if isinstance(obj, bytes):
        return _py2_str(obj)
    if isinstance(obj, bool):
        raise TypeError("bool not supported")
    if isinstance(obj, int):
        return _py2_int(obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2_value(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2_value(k) + _py2_value(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        shape = b"(" + b"".join(_py2_int(d) for d in obj.shape) + b"t"
        dtype = (
            b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
            b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        )
        return (
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
            + _py2_str(b"b")
            + b"\x87R(K\x01"
            + shape
            + dtype
            + b"\x89"
            + _py2_str(np.ascontiguousarray(obj).tobytes())
            + b"tb"
        )
    raise TypeError(f"cannot write {type(obj).__name__} as a Python 2 pickle")


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled as Python 2's cPickle (protocol 2) wrote the CIFAR-10 batches."""
    return b"\x80\x02" + _py2_value(obj) + b"."


CIFAR_CLASSES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def cifar_batch(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Random (n, 3072) uint8 images and labels 0..9 (every class once when n >= 10)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [(i + seed) % 10 for i in range(n)]
    return data, labels


def write_cifar_dir(directory, n: int = 12) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny ``cifar-10-batches-py`` folder; return {file: (data, labels)}."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        data, labels = cifar_batch(n, seed)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        batch[b"filenames"] = [f"img_{i}.png".encode() for i in range(n)]
        (directory / name).write_bytes(py2_pickle(batch))
        written[name] = (data, labels)
    meta = {b"num_cases_per_batch": n, b"label_names": CIFAR_CLASSES, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(py2_pickle(meta))
    return written


# --- WAV ---------------------------------------------------------------------------------------


def write_wav(path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    """Write float samples in [-1, 1] as 16-bit PCM with the standard library's ``wave``."""
    import wave

    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


# --- SVHN ----------------------------------------------------------------------------------


def svhn_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """X (32, 32, 3, n) uint8 and y (n, 1) uint8 in 1..10 (10 = digit 0), as published."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    return x, y


def write_svhn_mat(path, x: np.ndarray, y: np.ndarray) -> None:
    """Write a MATLAB 5 file with variables X and y, as the published ``*_32x32.mat``."""
    from scipy.io import savemat

    savemat(path, {"X": x, "y": y}, format="5")


# --- Speech Commands -----------------------------------------------------------------------

SPEECH_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_OTHER_WORDS = ("bed", "marvin")
SPEECH_LENGTHS = (16000, 12000, 16800, 9000)  # exactly 1 s, short (padded), long (cut), short


def speech_clip(word_index: int, clip: int, length: int) -> np.ndarray:
    """A deterministic word-like recording: a tone per word under an envelope, plus noise."""
    rng = np.random.default_rng(100 * word_index + clip)
    t = np.arange(length) / 16000
    tone = np.sin(2 * np.pi * (200 + 60 * word_index) * t) * np.hanning(length)
    return 0.5 * tone + 0.01 * rng.standard_normal(length)


def write_speech_tree(
    directory, clips_per_word: int = 4, background_seconds: float = 10.0
) -> dict[str, list[str]]:
    """Write a tiny extracted ``speech_commands_v0.02`` tree; return the validation/test lists.

    Every word folder gets ``clips_per_word`` WAVs of the lengths in :data:`SPEECH_LENGTHS`;
    clip 1 of each word is listed for validation, clip 2 for testing. ``_background_noise_``
    gets two noise recordings of ``background_seconds``.
    """
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    for w, word in enumerate(SPEECH_KEYWORDS + SPEECH_OTHER_WORDS):
        for c in range(clips_per_word):
            rel = f"{word}/{0x1A2B0 + 7 * c:08x}_nohash_{c}.wav"
            length = SPEECH_LENGTHS[c % len(SPEECH_LENGTHS)]
            write_wav(directory / rel, speech_clip(w, c, length))
            if c == 1:
                lists["validation"].append(rel)
            elif c == 2:
                lists["test"].append(rel)
    (directory / "validation_list.txt").write_text("\n".join(lists["validation"]) + "\n")
    (directory / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    rng = np.random.default_rng(7)
    n = int(background_seconds * 16000)
    for i, name in enumerate(("running_tap.wav", "white_noise.wav")):
        write_wav(directory / "_background_noise_" / name, (0.2 + 0.1 * i) * rng.uniform(-1, 1, n))
    (directory / "_background_noise_" / "README.md").write_text("background noise\n")
    return lists
