"""Unpickling that can only rebuild numpy arrays, never call arbitrary code from a crafted file.

A pickle names the callables it wants run (``os.system``, ``builtins.eval``, …); a plain
``pickle.load`` imports and calls them. :class:`RestrictedUnpickler` resolves only the few globals
that pickled numpy arrays need and refuses every other one before anything is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import IO, Any

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "restricted_load", "restricted_loads"]


def _numpy_multiarray_reconstruct() -> Any:
    """numpy's ``_reconstruct`` from wherever this numpy keeps it (``numpy._core`` in 2.x)."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy multiarray._reconstruct not found")  # pragma: no cover


def _numpy_attr(name: str) -> Any:
    """An attribute of the top-level numpy module."""
    import numpy

    return getattr(numpy, name)


def _codecs_encode() -> Any:
    """``_codecs.encode``: how Python 3 writes ``bytes`` in protocol-2 pickles."""
    import _codecs

    return _codecs.encode


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_multiarray_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_multiarray_reconstruct,
    ("numpy", "ndarray"): lambda: _numpy_attr("ndarray"),
    ("numpy", "dtype"): lambda: _numpy_attr("dtype"),
    ("_codecs", "encode"): _codecs_encode,
}
"""(module, name) → resolver of the only globals a pickle may reference.

What the CIFAR-10 "python version" batches (Python 2 pickles of dicts holding a uint8 array, int
lists and strings) need: numpy's array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``;
numpy 2 spells the module ``numpy._core``), plus ``_codecs.encode`` with which Python 3 stores
``bytes`` in protocol-2 pickles (re-saved batches). Dicts, lists, strings and numbers need none.
"""


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse anything else with ``pickle.UnpicklingError``."""
        resolver = ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction is "
                "allowed in this file"
            )
        return resolver()


def restricted_load(stream: IO[bytes], *, encoding: str = "bytes") -> Any:
    """Unpickle from a binary stream with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` keeps Python 2 ``str`` objects (CIFAR's keys, ``b"data"``) as bytes.
    Every array in the result must have a plain dtype (see :func:`_check_arrays`).
    """
    loaded = RestrictedUnpickler(stream, encoding=encoding).load()
    _check_arrays(loaded)
    return loaded


def _check_arrays(value: Any, depth: int = 0) -> None:
    """Refuse arrays whose dtype is not a plain number type.

    A pickle may set a dtype's state directly (no call outside the allowed globals), e.g. a
    field placed beyond the element's bytes: reading such an array reads memory outside it, or
    crashes the process. A plain dtype is the one its type string gives back.
    """
    import numpy

    if depth > 8:
        raise pickle.UnpicklingError("refusing to load containers nested more than 8 deep")
    if isinstance(value, numpy.ndarray):
        dtype = value.dtype
        plain = dtype.fields is None and dtype.subdtype is None and dtype.kind in "biufc"
        if not plain or numpy.dtype(dtype.str) != dtype:
            raise pickle.UnpicklingError(
                f"refusing an array of dtype {dtype!r}: not a plain number type"
            )
    elif isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            _check_arrays(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_arrays(item, depth + 1)


def restricted_loads(data: bytes, *, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (see :func:`restricted_load`)."""
    return restricted_load(io.BytesIO(data), encoding=encoding)
