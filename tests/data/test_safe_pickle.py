"""Tests for the restricted unpickler: numpy arrays load, nothing else can be called."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.data.safe_pickle import restricted_loads

from .helpers import py2_pickle


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_crafted_os_system_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _RunsShell(marker)})
    with pytest.raises(
        pickle.UnpicklingError, match=r"refusing to load global (posix|os|nt)\.system"
    ):
        restricted_loads(payload)
    assert not marker.exists()
    # The same bytes do run code with a plain pickle.loads: the test payload is real.
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_builtins_eval_is_refused_in_every_protocol(protocol: int) -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"(__builtin__|builtins)\.eval"):
        restricted_loads(pickle.dumps(_Evals(), protocol=protocol))


def test_python2_cifar_style_pickle_loads_with_bytes_keys() -> None:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    loaded = restricted_loads(py2_pickle({b"data": data, b"labels": [3, 7], b"n": 70000}))
    assert set(loaded) == {b"data", b"labels", b"n"}
    assert loaded[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(loaded[b"data"], data)
    assert loaded[b"labels"] == [3, 7]
    assert loaded[b"n"] == 70000


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_python3_pickled_arrays_load(protocol: int) -> None:
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    loaded = restricted_loads(pickle.dumps({b"data": data, "text": "ok"}, protocol=protocol))
    np.testing.assert_array_equal(loaded[b"data"], data)
    assert loaded["text"] == "ok"


def test_other_numpy_callables_are_refused() -> None:
    payload = pickle.dumps(np.load, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global numpy"):
        restricted_loads(payload)


class _FieldBeyondItem:
    """A dtype whose state (set by the pickle, no call outside the allowed globals) puts its
    one field 64 bytes beyond each 8-byte element: reading it would read outside the array."""

    def __reduce__(self):
        state = (3, "|", None, ("a",), {"a": (np.dtype("<i8"), 64)}, 8, 1, 16)
        return (np.dtype, ("V8", False, True), state)


class _ArrayOf:
    def __init__(self, dtype: object) -> None:
        self.dtype = dtype

    def __reduce__(self):
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
        return (reconstruct, (np.ndarray, (0,), b"b"), (1, (4,), self.dtype, False, bytes(32)))


@pytest.mark.parametrize(
    "dtype",
    [_FieldBeyondItem(), np.dtype([("a", "<i4"), ("b", "<i4")])],
    ids=["field-beyond-item", "structured"],
)
def test_an_array_whose_dtype_is_not_a_plain_number_is_refused(dtype: object) -> None:
    payload = pickle.dumps({b"labels": _ArrayOf(dtype)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not a plain number type"):
        restricted_loads(payload)
    plain = pickle.dumps({b"labels": np.arange(4, dtype=np.int64)}, protocol=2)
    np.testing.assert_array_equal(restricted_loads(plain)[b"labels"], np.arange(4))
