"""Reader for the IDX file format in which MNIST and FashionMNIST are published.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type, ``DD`` the number of
dimensions), ``DD`` big-endian uint32 dimension sizes, then the elements in C order, big-endian.
Files may be gzip-compressed; compression is detected from the gzip magic bytes, not the name.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from walkingnoise.data.errors import DatasetFormatError, one_line

__all__ = ["IDX_DTYPES", "IdxFormatError", "parse_idx", "read_idx"]

GZIP_MAGIC = b"\x1f\x8b"

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX element type code → big-endian numpy dtype (ubyte, byte, short, int, float, double)."""

_EXPECTED_MAGIC = (
    "expected 0x0000TTDD with type TT one of 08 (ubyte), 09 (byte), 0B (short), 0C (int), "
    "0D (float), 0E (double) and DD >= 1 dimensions"
)


class IdxFormatError(DatasetFormatError):
    """Raised when a file is not a well-formed IDX file (or not the IDX content a loader expects).

    The message is one line that starts with the file's path and says what is wrong.
    """


def parse_idx(data: bytes, source: str = "<bytes>", dimensions: int | None = None) -> np.ndarray:
    """Decode uncompressed IDX ``data`` into a native-endian array; ``source`` names it in errors
    and ``dimensions``, when given, the number of dimensions it should have: a file whose
    length does not fit its header is then told to have a bad magic number if that is why.

    Raises:
        IdxFormatError: bad magic number, short header, or a payload that is not exactly the
            product of the dimensions times the element size.
    """
    if len(data) < 4:
        raise IdxFormatError(
            f"{source}: too short for an IDX header: {len(data)} bytes, need at least 4"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in IDX_DTYPES or ndim == 0:
        twice = data[:2] == GZIP_MAGIC
        said = "; it is gzip-compressed (twice, if read from a .gz): decompress it" if twice else ""
        raise IdxFormatError(f"{source}: bad magic number 0x{magic:08X}, {_EXPECTED_MAGIC}{said}")

    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(
            f"{source}: truncated header: {ndim} dimension sizes need {header_len} bytes, "
            f"found {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header_len
    if found != expected and dimensions is not None and ndim != dimensions:
        raise IdxFormatError(
            f"{source}: bad magic number 0x{magic:08X}: it says {ndim} dimensions, expected "
            f"{dimensions} (0x{type_code:02X}{dimensions:02X} in its last two bytes)"
        )
    if found < expected:
        raise IdxFormatError(
            f"{source}: truncated: expected {expected} bytes of data for shape {shape} "
            f"{dtype.name}, found {found}"
        )
    if found > expected:
        raise IdxFormatError(
            f"{source}: {found - expected} trailing bytes: expected {expected} bytes of data for "
            f"shape {shape} {dtype.name}, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header_len)
    # astype copies into a writable, native-endian array that does not pin ``data`` in memory.
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path, dimensions: int | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a native-endian numpy array;
    ``dimensions``, when given, is how many it should have (see :func:`parse_idx`).

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "tiny-idx2-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 2, 7, 9]))
        >>> read_idx(p)
        array([[7, 9]], dtype=uint8)

    Raises:
        IdxFormatError: the file is not valid IDX, or its gzip stream is corrupt.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupt gzip stream: {one_line(exc)}") from exc
    return parse_idx(data, source=str(path), dimensions=dimensions)
