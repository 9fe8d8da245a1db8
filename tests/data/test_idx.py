"""Tests for walkingnoise.data.idx: real MNIST bytes, synthetic dtypes, corrupted files."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.data import IdxFormatError, read_idx
from walkingnoise.data.idx import parse_idx

from .helpers import T10K_IMAGES, T10K_LABELS, encode_idx

# Class counts of the MNIST test set, from ../shared/data/mnist-t10k/README.md.
T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
T10K_IMAGES_RAW_MD5 = "2646ac647ad5339dbf082846283269ea"


def _assert_one_line_naming(err: pytest.ExceptionInfo[BaseException], path: Path) -> str:
    """Check the error message is a single line that names ``path``; return it."""
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# --- real MNIST bytes -------------------------------------------------------------------------


def test_real_t10k_checksums_match_sha256sums(mnist_t10k_dir: Path) -> None:
    sums = {}
    for line in (mnist_t10k_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    assert set(sums) == {f"{T10K_IMAGES}.gz", f"{T10K_LABELS}.gz"}
    for name, digest in sums.items():
        assert hashlib.sha256((mnist_t10k_dir / name).read_bytes()).hexdigest() == digest


def test_real_t10k_shapes_dtypes_and_labels(t10k_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = t10k_arrays
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert labels.dtype == np.uint8
    assert labels.min() == 0
    assert labels.max() == 9
    assert np.bincount(labels, minlength=10).tolist() == T10K_CLASS_COUNTS
    assert images.min() == 0
    assert images.max() == 255


def test_real_t10k_images_match_published_md5(t10k_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = t10k_arrays
    # The published MD5 is of the whole decompressed file; re-encoding must reproduce those bytes.
    assert hashlib.md5(encode_idx(images)).hexdigest() == T10K_IMAGES_RAW_MD5


def test_raw_and_gzip_read_identically(
    t10k_arrays: tuple[np.ndarray, np.ndarray], t10k_raw_dir: Path
) -> None:
    images, labels = t10k_arrays
    raw_images = read_idx(t10k_raw_dir / T10K_IMAGES)
    raw_labels = read_idx(t10k_raw_dir / T10K_LABELS)
    assert raw_images.dtype == images.dtype
    np.testing.assert_array_equal(raw_images, images)
    np.testing.assert_array_equal(raw_labels, labels)


def test_gzip_is_detected_by_magic_bytes_not_name(
    mnist_t10k_dir: Path, t10k_raw_dir: Path, tmp_path: Path
) -> None:
    gz_without_suffix = tmp_path / "labels-no-suffix"
    gz_without_suffix.write_bytes((mnist_t10k_dir / f"{T10K_LABELS}.gz").read_bytes())
    raw_with_suffix = tmp_path / "labels-raw.gz"
    raw_with_suffix.write_bytes((t10k_raw_dir / T10K_LABELS).read_bytes())
    expected = read_idx(t10k_raw_dir / T10K_LABELS)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), expected)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), expected)


def test_result_is_writable_native_array(t10k_raw_dir: Path) -> None:
    labels = read_idx(t10k_raw_dir / T10K_LABELS)
    assert labels.flags.writeable
    assert labels.dtype.isnative


# --- synthetic IDX files of every dtype -------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64], ids=str
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_synthetic_round_trip(
    dtype: type, gz: bool, tmp_path: Path, write_idx: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    array = rng.uniform(info.min / 2, info.max / 2, size=(3, 4, 5)).astype(dtype)
    array.flat[0] = info.min
    array.flat[1] = info.max
    path = write_idx(tmp_path / "array.idx", array, gz=gz)
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype)
    assert result.shape == (3, 4, 5)
    np.testing.assert_array_equal(result, array)


def test_int16_is_read_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "short-idx1"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    assert read_idx(path).tolist() == [0x0102, -2]


def test_float32_is_read_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "float-idx1"
    path.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + np.array([1.5], dtype=">f4").tobytes())
    assert read_idx(path).tolist() == [1.5]


def test_empty_dimension_reads_empty_array(tmp_path: Path, write_idx: Callable[..., Path]) -> None:
    path = write_idx(tmp_path / "empty", np.zeros((0, 28, 28), dtype=np.uint8))
    assert read_idx(path).shape == (0, 28, 28)


# --- corrupted files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("magic", "shown"),
    [
        (bytes([0, 0, 0x07, 3]), "0x00000703"),  # unknown type code
        (bytes([1, 0, 0x08, 3]), "0x01000803"),  # nonzero leading byte
        (bytes([0, 0, 0x08, 0]), "0x00000800"),  # zero dimensions
        (bytes([0x08, 0x03, 0, 0]), "0x08030000"),  # little-endian magic
    ],
)
def test_bad_magic_number(magic: bytes, shown: str, t10k_raw_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / T10K_IMAGES
    path.write_bytes(magic + (t10k_raw_dir / T10K_IMAGES).read_bytes()[4:])
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    message = _assert_one_line_naming(err, path)
    assert f"bad magic number {shown}" in message


def test_bad_magic_in_gzip_file_names_the_gz_file(t10k_raw_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{T10K_IMAGES}.gz"
    data = bytearray((t10k_raw_dir / T10K_IMAGES).read_bytes())
    data[2] = 0x05
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1))
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    assert "bad magic number 0x00000503" in _assert_one_line_naming(err, path)


def test_a_file_compressed_twice_is_told_to_be(tmp_path: Path) -> None:
    # gzip run on a .gz (or a server's gzip encoding kept): the inner stream's magic 1F 8B
    path = tmp_path / f"{T10K_LABELS}.gz"
    inner = gzip.compress(encode_idx(np.arange(10, dtype=np.uint8)))
    path.write_bytes(gzip.compress(inner))
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    message = _assert_one_line_naming(err, path)
    assert "bad magic number 0x1F8B" in message
    assert "gzip-compressed (twice, if read from a .gz)" in message


def test_wrong_number_of_dimensions_is_told_by_the_magic_number(
    t10k_raw_dir: Path, tmp_path: Path
) -> None:
    """A loader that knows a file holds images (3 dimensions) says so, not 'trailing bytes'."""
    path = tmp_path / T10K_IMAGES
    path.write_bytes(bytes([0, 0, 8, 7]) + (t10k_raw_dir / T10K_IMAGES).read_bytes()[4:])
    with pytest.raises(IdxFormatError) as err:
        read_idx(path, dimensions=3)
    message = _assert_one_line_naming(err, path)
    assert "bad magic number 0x00000807: it says 7 dimensions, expected 3 (0x0803" in message
    assert read_idx(t10k_raw_dir / T10K_LABELS, dimensions=1).shape == (10_000,)


def test_truncated_payload(t10k_raw_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / T10K_IMAGES
    path.write_bytes((t10k_raw_dir / T10K_IMAGES).read_bytes()[:-1234])
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    message = _assert_one_line_naming(err, path)
    assert "truncated: expected 7840000 bytes of data" in message
    assert f"found {7840000 - 1234}" in message


def test_trailing_bytes(t10k_raw_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / T10K_LABELS
    path.write_bytes((t10k_raw_dir / T10K_LABELS).read_bytes() + b"\x00\x01\x02")
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    message = _assert_one_line_naming(err, path)
    assert "3 trailing bytes" in message
    assert "expected 10000 bytes of data" in message


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0x27, 0x10, 0, 0]))
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    assert "truncated header" in _assert_one_line_naming(err, path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08"], ids=["empty", "3-bytes"])
def test_too_short_for_header(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(content)
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    assert "too short for an IDX header" in _assert_one_line_naming(err, path)


def test_corrupt_gzip_stream(mnist_t10k_dir: Path, tmp_path: Path) -> None:
    data = bytearray((mnist_t10k_dir / f"{T10K_IMAGES}.gz").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path = tmp_path / f"{T10K_IMAGES}.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    assert "corrupt gzip stream" in _assert_one_line_naming(err, path)


def test_truncated_gzip_stream(mnist_t10k_dir: Path, tmp_path: Path) -> None:
    data = (mnist_t10k_dir / f"{T10K_LABELS}.gz").read_bytes()
    path = tmp_path / f"{T10K_LABELS}.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    assert "corrupt gzip stream" in _assert_one_line_naming(err, path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_idx_format_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="<bytes>: too short"):
        parse_idx(b"")
