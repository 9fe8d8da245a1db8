"""The network behind each model name of a store: a model edited between two runs of a sweep
must not add its results to the curves of the network it was before.

Experiments are identified by their settings, the model's *name* among them, so a user's own
model changed in its file would otherwise find its old results "already done" and share their
curves. The store keeps, per (dataset, model, batchnorm), what decides which results belong
together: the noise sites (kind, operation, shape) and the shapes of the parameters and
buffers. A run whose model differs from the stored one stops before it runs anything, unless
told the change is meant. Module names and the weights' initial values are not compared: a
renamed layer, or a changed initialisation, goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from walkingnoise.noise.site import SiteInfo
from walkingnoise.sweep.changes import refuse_changes


class ArchitectureChangedError(ValueError):
    """A model's network is not the one the store's experiments of it ran."""


def architecture_key(dataset: str, model: str, batchnorm: bool) -> str:
    """Which stored network the results of a (dataset, model, batchnorm) belong to, e.g.
    ``digits|mlp|batchnorm``."""
    return f"{dataset}|{model}|{'batchnorm' if batchnorm else 'no-batchnorm'}"


def describe_network(model: nn.Module, sites: Iterable[SiteInfo]) -> list[str]:
    """One line per noise site of ``model`` (index, kind, the layer class or operation it
    follows, shape without the batch) and per parameter and buffer of the clean ``model`` in
    order (shape, dtype). Names of modules are left out: renaming one changes no result."""
    lines = [f"site {s.index}: {_operation(s.name)} ({s.kind}) {_shape(s.shape[1:])}"
             for s in sites]  # fmt: skip
    for kind, tensors in (("parameter", model.parameters()), ("buffer", model.buffers())):
        lines += [f"{kind} {i}: {_shape(t.shape)} {str(t.dtype).removeprefix('torch.')}"
                  for i, t in enumerate(tensors)]  # fmt: skip
    return lines


def _operation(site_name: str) -> str:
    """What a site follows, without the module's path or a repeat mark: ``ReLU`` of
    ``layers.3:ReLU``, ``add`` of ``add#2``."""
    return site_name.rsplit(":", 1)[-1].split("#", 1)[0]


def _shape(shape: Iterable[int]) -> str:
    return "×".join(str(n) for n in shape) or "scalar"


def check_networks(now: Mapping[str, list[str]], stored: Mapping[str, list[str]]) -> None:
    """Raise ``ArchitectureChangedError`` (one line: the model and its first difference) if a
    network of ``now`` differs from the one ``stored`` under the same key."""
    refuse_changes(now, stored, _changed_network)


def _changed_network(key: str, lines: list[str], before: list[str]) -> ArchitectureChangedError:
    dataset, rest = key.split("|", 1)
    model, norm = rest.rsplit("|", 1)
    return ArchitectureChangedError(
        f"model {model!r} ({norm}, on {dataset}) is not the network this store's "
        f"experiments of it ran: {_first_difference(lines, before)}; register the changed "
        "model under a new name, or use a new store, so that its results do not join the "
        "old ones (--accept-network-change: they may)"
    )


def _first_difference(now: list[str], before: list[str]) -> str:
    """The first line that differs (``now '…', was '…'``), or the lines one of them lacks."""
    for line, old in zip(now, before, strict=False):
        if line != old:
            return f"now {line!r}, was {old!r}"
    if len(now) > len(before):
        return f"it has {len(now) - len(before)} more entries, from {now[len(before)]!r}"
    return f"it lacks {len(before) - len(now)} entries, from {before[len(now)]!r}"
