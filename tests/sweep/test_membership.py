"""Which stored experiments a sweep file, as it is now, defines."""

from __future__ import annotations

from pathlib import Path

from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store
from walkingnoise.sweep.membership import sweep_members
from walkingnoise.sweep.spec import expand

from .helpers import eval_only_spec, spec


def _stored(store: Store, sweep) -> list[str]:
    """Add the sweep's experiments to the store (as a run does first); their hashes."""
    entries = expand(sweep)
    store.add((entry.experiment, entry.block) for entry in entries)
    return [entry.experiment.content_hash() for entry in entries]


def _sigma_of(keys: set[str], store: Store) -> list[float]:
    return sorted(e.sigma for e in store.experiments() if e.content_hash() in keys)


def test_an_edited_sweep_defines_only_what_it_has_now(tmp_path: Path) -> None:
    with Store(tmp_path / "edited.sqlite") as store:
        before = _stored(store, eval_only_spec([0.1, 1.0, 10.0]))
        edited = eval_only_spec([1.0, 10.0, 100.0])
        members = sweep_members(edited, store)
        assert len(before) == 6  # 3 σ × 2 sites
        assert _sigma_of(members, store) == [1.0, 1.0, 10.0, 10.0]
        assert members - set(before) == {  # σ = 100, not stored yet, but defined
            e.experiment.content_hash() for e in expand(edited) if e.experiment.sigma == 100.0
        }


def test_an_adaptive_curve_keeps_the_sigma_its_rounds_added(tmp_path: Path) -> None:
    adaptive = spec(
        """
        name: adaptive
        fixed: {dataset: digits, placement: "walking:1", train_noise: false}
        grid:
          seed: {type: choice, options: [0, 1]}
          sigma: {type: adaptive, min: -2, max: 2, initial: 3}
        """
    )
    with Store(tmp_path / "adaptive.sqlite") as store:
        first = _stored(store, adaptive)
        template = expand(adaptive)[0].experiment
        added = template.model_copy(update={"sigma": 0.3})  # as a later round adds it
        other_seed = template.model_copy(update={"sigma": 0.3, "seed": 7})
        other_site = template.model_copy(update={"sigma": 0.3, "placement": "walking:2"})
        outside = template.model_copy(update={"sigma": 1000.0})  # another sweep's, beyond 10^2
        store.add([(added, "root"), (other_seed, "root"), (other_site, "root"), (outside, "x")])
        members = sweep_members(adaptive, store)
    assert members == {*first, added.content_hash()}


def test_a_grid_sweep_does_not_take_other_sigma_of_its_curves(tmp_path: Path) -> None:
    """Without an adaptive axis, σ is part of what the file defines."""
    with Store(tmp_path / "grid.sqlite") as store:
        kept = _stored(store, eval_only_spec([0.1, 1.0]))
        _stored(store, eval_only_spec([0.5]))
        assert sweep_members(eval_only_spec([0.1, 1.0]), store) == set(kept)


def test_walking_star_without_the_dataset_takes_the_stored_sites(tmp_path: Path) -> None:
    """A store copied from a cluster, analysed where the dataset's files are not."""
    text = """
    name: cluster
    fixed: {dataset: mnist, placement: "walking:*", train_noise: false}
    grid: {sigma: {type: choice, options: [0.1, 1.0]}}
    global:
      fixed: {dataset: mnist, placement: global, train_noise: false, sigma: 0.5}
    walking: {}
    """
    empty = tmp_path / "no-data"
    empty.mkdir()
    stored = [
        Experiment(dataset="mnist", placement=f"walking:{site}", sigma=sigma, train_noise=False)
        for site in range(3)
        for sigma in (0.1, 1.0, 10.0)
    ]
    stored.append(Experiment(dataset="mnist", placement="global", sigma=0.5, train_noise=False))
    with Store(tmp_path / "cluster.sqlite") as store:
        store.add((e, "walking") for e in stored)
        members = sweep_members(spec(text), store, data_root=empty)
    wanted = {e.content_hash() for e in stored if e.sigma != 10.0}
    assert members == wanted
