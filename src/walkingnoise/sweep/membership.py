"""Which of a store's experiments a sweep file defines now, so that the analysis of a study
whose file was edited leaves out what the earlier versions of the file added."""

from __future__ import annotations

import json
from pathlib import Path

from walkingnoise.data.errors import DatasetNotFoundError
from walkingnoise.experiment import Experiment
from walkingnoise.noise.placement import WalkingPlacement
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import AdaptiveAxis, SweepSpec, expand
from walkingnoise.sweep.store import Store

#: Relative slack on an adaptive axis's σ range, for σ rounded when stored.
RANGE_RTOL = 1e-9


def sweep_members(
    spec: SweepSpec, store: Store, *, data_root: str | Path | None = None
) -> set[str]:
    """Hashes of the experiments that ``spec`` defines, stored or not.

    These are the experiments the sweep expands to and, on a leaf with an adaptive σ axis, the
    stored ones that the adaptive rounds added to its curves: the same experiment at another σ
    inside the axis's range. ``walking:*`` takes the model's sites from its dataset; where the
    dataset is not here (a store copied from a cluster), from the walking sites the store holds.
    """
    stored = _Stored(store)
    sites = _SiteCount(data_root, stored)
    entries = expand(spec, site_count=sites, max_experiments=None, check_sites=False)
    members = {entry.experiment.content_hash() for entry in entries}
    axes = spec.adaptive_axes()
    curves = {_curve(e.experiment): axes[e.block] for e in entries if e.block in axes}
    for experiment in stored.experiments() if curves else ():
        axis = curves.get(_curve(experiment))
        if axis is not None and _inside(experiment.sigma, axis):
            members.add(experiment.content_hash())
    return members


class _Stored:
    """The store's experiments, read and validated once, and only if they are needed."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._experiments: list[Experiment] | None = None

    def experiments(self) -> list[Experiment]:
        if self._experiments is None:
            self._experiments = self._store.experiments()
        return self._experiments


class _SiteCount:
    """The number of sites of an experiment's model: from its dataset, or else one more than
    the largest walking site the store holds for that model (what matching needs)."""

    def __init__(self, data_root: str | Path | None, stored: _Stored) -> None:
        self._counter = SiteCounter(data_root)
        self._stored = stored
        self._sites: dict[tuple[str, str, bool], int] | None = None

    def __call__(self, experiment: Experiment) -> int:
        try:
            return self._counter(experiment)
        except DatasetNotFoundError:
            key = (experiment.dataset, experiment.model, experiment.batchnorm)
            return self._stored_sites().get(key, 0)

    def _stored_sites(self) -> dict[tuple[str, str, bool], int]:
        if self._sites is None:
            self._sites = {}
            for stored in self._stored.experiments():
                placement = stored.placement_spec()
                if isinstance(placement, WalkingPlacement):
                    key = (stored.dataset, stored.model, stored.batchnorm)
                    self._sites[key] = max(self._sites.get(key, 0), placement.site + 1)
        return self._sites


def _curve(experiment: Experiment) -> str:
    """The experiment without its σ: what the experiments of one adaptive curve share."""
    fields = experiment.identity()
    fields.pop("sigma", None)
    return json.dumps(fields, sort_keys=True)


def _inside(sigma: object, axis: AdaptiveAxis) -> bool:
    """Whether σ lies in the adaptive axis's range 10^min … 10^max."""
    if not isinstance(sigma, float) or sigma <= 0:
        return False
    low, high = 10.0**axis.min, 10.0**axis.max
    return low * (1 - RANGE_RTOL) <= sigma <= high * (1 + RANGE_RTOL)
