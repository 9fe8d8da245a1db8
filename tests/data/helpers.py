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
