"""The data behind each dataset name of a store: results of other data must not join them.

An experiment names its dataset, not the data's content, so that the same data read from
another folder or machine keeps its results. The store therefore keeps, per dataset name, a
fingerprint of the tensors its experiments trained and tested on: SHA-256 of the inputs and of
the labels of every split, and the split sizes. A run whose data differ from those the
store's finished experiments of that dataset ran on (files replaced, labels relabelled,
another ``--data-root`` holding other files) stops before it runs anything, unless told the
change is meant; until an experiment of it has finished, the fingerprint follows the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from walkingnoise.data.dataset import InMemoryDataset
from walkingnoise.sweep.changes import refuse_changes

__all__ = ["DataChangedError", "check_datasets", "dataset_fingerprint", "other_data_warning"]

_SPLITS = ("train", "validation", "test")


class DataChangedError(ValueError):
    """A dataset's data is not the data the store's experiments of it ran on."""


def dataset_fingerprint(data: InMemoryDataset) -> list[str]:
    """``["inputs sha256 HEX", "labels sha256 HEX", "train N, validation N, test N"]``."""
    inputs, labels = hashlib.sha256(), hashlib.sha256()
    for name in _SPLITS:
        split = data.split(name)
        inputs.update(_bytes(split.x))
        labels.update(_bytes(split.y))
    sizes = ", ".join(f"{name} {len(data.split(name))}" for name in _SPLITS)
    return [f"inputs sha256 {inputs.hexdigest()}", f"labels sha256 {labels.hexdigest()}", sizes]


def _bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's elements in C order, without a copy where it is already so on the CPU."""
    array = tensor.detach().cpu().contiguous().numpy()
    return memoryview(array).cast("B")


def check_datasets(now: Mapping[str, list[str]], stored: Mapping[str, list[str]]) -> None:
    """Raise ``DataChangedError`` (one line, naming the dataset and what differs) if a
    dataset of ``now`` differs from the one ``stored`` under the same name."""
    refuse_changes(now, stored, _changed_data)


def _changed_data(name: str, fingerprint: list[str], before: list[str]) -> DataChangedError:
    return DataChangedError(
        f"dataset {name!r}: not the data this store recorded for its finished experiments "
        f"({_difference(fingerprint, before)}); point --data-root at those data, or use a new "
        "store, so that results of other data do not join theirs (--accept-data-change: they "
        "may, and these data become the store's)"
    )


def _difference(now: list[str], before: list[str]) -> str:
    """What differs, in words: the split sizes, else the labels and/or the inputs."""
    if now[2:] != before[2:]:
        return f"splits of {now[2]}, were {before[2] if len(before) > 2 else 'unknown'}"
    differ = [kind for kind, a, b in zip(("inputs", "labels"), now, before, strict=False) if a != b]
    said = " and ".join(differ) or "fingerprints"
    note = (
        "; features computed anew, on another machine or version, can differ in their last bits"
        if differ == ["inputs"]
        else ""
    )
    return f"its {said} differ: now {_short(now)}; was {_short(before)}{note}"


def _short(fingerprint: list[str]) -> str:
    """``inputs 9723eaff1416, labels 582a296989eb``: the digests cut to 12 hex digits."""
    return ", ".join(
        f"{line.split(' ', 1)[0]} {line.rsplit(' ', 1)[-1][:12]}" for line in fingerprint[:2]
    )


def other_data_warning(store: str | Path, data: InMemoryDataset) -> str:
    """For commands that evaluate a store's models on data read now (``binarization``,
    ``sqnr``, ``multiexec evaluate``): a line saying ``data`` are not the data the store
    recorded for their dataset, or "" where they are (or none were recorded)."""
    from walkingnoise.sweep.store import Store

    with Store(store, read_only=True) as opened:
        before = opened.fingerprints("data").get(data.name)
    if before is None:
        return ""
    now = dataset_fingerprint(data)
    if now == before:
        return ""
    return (
        f"warning: dataset {data.name!r}: not the data {store} recorded for its experiments "
        f"({_difference(now, before)}); the numbers below are of the data read now"
    )
