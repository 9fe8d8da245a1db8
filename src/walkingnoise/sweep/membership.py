"""Which of a store's experiments a sweep file defines now, so that the analysis of a study
whose file was edited leaves out what the earlier versions of the file added."""

from __future__ import annotations

import json
from pathlib import Path

from walkingnoise.experiment import Experiment
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import SweepSpec, expand
from walkingnoise.sweep.store import Store


def sweep_members(
    spec: SweepSpec, store: Store, *, data_root: str | Path | None = None
) -> set[str]:
    """Hashes of the stored experiments that ``spec`` defines.

    These are the experiments the sweep expands to and, on a leaf with an adaptive σ axis, the
    ones the adaptive rounds added to its curves: the same experiment at any other σ.
    """
    entries = expand(spec, site_count=SiteCounter(data_root), max_experiments=None)
    members = {entry.experiment.content_hash() for entry in entries}
    axes = spec.adaptive_axes()
    curves = {_curve(entry.experiment) for entry in entries if entry.block in axes}
    if curves:
        members |= {e.content_hash() for e in store.experiments() if _curve(e) in curves}
    return members


def _curve(experiment: Experiment) -> str:
    """The experiment without its σ: what the experiments of one adaptive curve share."""
    fields = experiment.identity()
    fields.pop("sigma", None)
    return json.dumps(fields, sort_keys=True)
