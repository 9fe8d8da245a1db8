"""Planning: shared clean trainings for inference-only experiments, cohorts of noisy trainings."""

from __future__ import annotations

from walkingnoise.experiment import Experiment
from walkingnoise.sweep.planner import cohort_key, plan
from walkingnoise.training.distillation import Distillation


def _inference_only(seed: int = 0, **fields: object) -> list[Experiment]:
    return [
        Experiment(
            noise=noise, sigma=sigma, placement=placement, seed=seed, train_noise=False, **fields
        )
        for noise in ("additive", "multiplicative")
        for sigma in (0.1, 1.0)
        for placement in ("walking:0", "walking:4", "global")
    ]


def _noisy(n: int, **fields: object) -> list[Experiment]:
    return [
        Experiment(
            noise="additive",
            sigma=0.1 * (i + 1),
            placement=f"walking:{i % 3}",
            train_noise=True,
            **fields,
        )
        for i in range(n)
    ]


def test_inference_only_experiments_share_one_training() -> None:
    experiments = _inference_only()
    work = plan(experiments)
    assert len(work.units) == 1
    (unit,) = work.units
    assert unit.members == tuple(experiments)
    assert unit.shared_training == experiments[0].clean_training()
    assert unit.shared_training.noise == "none"
    assert unit.checkpoint is None
    assert (work.experiments, work.trainings, work.shared_trainings) == (12, 1, 1)


def test_one_shared_training_per_seed_model_and_recipe() -> None:
    experiments = (
        _inference_only(seed=0)
        + _inference_only(seed=1)
        + _inference_only(seed=0, batchnorm=False)
        + _inference_only(seed=0, recipe={"epochs": 3})
    )
    work = plan(experiments)
    assert work.trainings == 4
    assert work.shared_trainings == 4
    assert [len(u.members) for u in work.units] == [12, 12, 12, 12]
    trainings = {u.shared_training.content_hash() for u in work.units}
    assert len(trainings) == 4
    for unit in work.units:
        assert {m.clean_training() for m in unit.members} == {unit.shared_training}


def test_eval_repeats_and_gradient_do_not_split_a_shared_training() -> None:
    experiments = [
        Experiment(noise="additive", sigma=0.5, eval_repeats=2),
        Experiment(noise="additive", sigma=0.5, eval_repeats=7, gradient="through_noise"),
        Experiment(noise="mixed", sigma=(0.1, 0.2), order="add_first"),
        Experiment(noise="none"),
    ]
    work = plan(experiments)
    assert len(work.units) == 1
    assert work.trainings == 1


def test_noisy_trainings_form_cohorts_chunked_by_max_unit() -> None:
    first = _noisy(5)
    second = _noisy(3, recipe={"lr": 0.01})
    third = [*_noisy(2, seed=4), *_noisy(1, seed=9)]  # seeds may differ inside a cohort
    work = plan([*first, *second, *third], max_unit=2)
    assert [len(u.members) for u in work.units] == [2, 2, 2, 2, 2, 1]
    # by seed, then placement (walking:0, 1, 2, 0, 1 for the five of ``first``)
    assert [u.members for u in work.units] == [
        (first[0], first[3]),
        (first[1], first[4]),
        (first[2], third[0]),
        tuple(third[1:]),
        tuple(second[:2]),
        (second[2],),
    ]
    for unit in work.units:
        assert unit.shared_training is None
        assert len({cohort_key(m) for m in unit.members}) == 1
        assert unit.trainings == len(unit.members)
    assert (work.experiments, work.trainings, work.shared_trainings) == (11, 11, 0)
    keys = {cohort_key(m) for m in first + third}
    assert len(keys) == 1
    assert cohort_key(second[0]) not in keys


def test_a_cohort_is_split_only_beyond_max_unit() -> None:
    assert [len(u.members) for u in plan(_noisy(40), max_unit=16).units] == [14, 14, 12]
    assert [len(u.members) for u in plan(_noisy(40), max_unit=40).units] == [40]


def test_a_cohort_is_shared_among_the_workers() -> None:
    sizes = [len(u.members) for u in plan(_noisy(40), max_unit=16, workers=2).units]
    assert sizes == [10, 10, 10, 10]
    assert [len(u.members) for u in plan(_noisy(3), workers=8).units] == [1, 1, 1]


def test_mixed_plan_counts() -> None:
    work = plan([*_noisy(4), *_inference_only()])
    assert work.experiments == 16
    assert work.trainings == 4 + 1
    assert work.shared_trainings == 1


def test_a_unit_holds_the_models_of_one_placement_together() -> None:
    units = plan(_noisy(40), max_unit=16).units
    assert [len(u.members) for u in units] == [14, 14, 12]
    assert {m.placement for m in units[0].members} == {"walking:0"}  # 14 of them


def test_a_cut_near_a_change_of_seed_moves_onto_it() -> None:
    cohort = [e for seed in range(3) for e in _noisy(99, seed=seed)]
    units = plan(cohort, max_unit=64, workers=2).units
    assert sorted(len(u.members) for u in units) == [47, 48, 49, 50, 51, 52]
    assert all(len({m.seed for m in u.members}) == 1 for u in units)
    near = [*_noisy(33, seed=0), *_noisy(27, seed=1)]  # the cut at 30 moves to 33
    assert [len(u.members) for u in plan(near, max_unit=64, workers=2).units] == [33, 27]
    far = [*_noisy(45, seed=0), *_noisy(15, seed=1)]  # 45 is more than 30 / 4 from 30
    assert [len(u.members) for u in plan(far, max_unit=64, workers=2).units] == [30, 30]


def test_a_cut_moves_onto_a_change_of_seed_only_within_the_unit_limit() -> None:
    near = [*_noisy(33, seed=0), *_noisy(27, seed=1)]  # moving the cut at 30 to 33 fits 32: not
    assert [len(u.members) for u in plan(near, max_unit=32, workers=2).units] == [30, 30]
    for seeds in ([9, 3, 12, 5], [7, 7, 7, 7, 7], [25, 1, 30]):
        cohort = [e for seed, n in enumerate(seeds) for e in _noisy(n, seed=seed)]
        for max_unit in range(2, 26):
            units = plan(cohort, max_unit=max_unit, workers=2).units
            assert max(len(u.members) for u in units) <= max_unit, (seeds, max_unit)
            assert sorted(id(m) for u in units for m in u.members) == sorted(map(id, cohort))


def test_units_that_train_the_most_models_come_first() -> None:
    work = plan([*_inference_only(seed=1), *_noisy(40), *_inference_only(seed=2)], max_unit=16)
    assert [u.trainings for u in work.units] == [14, 14, 12, 1, 1]
    assert [u.shared_training is None for u in work.units] == [True, True, True, False, False]


def test_a_clean_training_already_stored_needs_no_training() -> None:
    experiments = _inference_only() + _inference_only(seed=1)
    stored = experiments[0].clean_training().content_hash()
    asked: list[str] = []

    def trained(key: str) -> bytes | None:
        asked.append(key)
        return b"checkpoint" if key == stored else None

    work = plan(experiments, trained=trained)
    assert sorted(asked) == sorted(
        {
            experiments[0].clean_training().content_hash(),
            experiments[-1].clean_training().content_hash(),
        }
    )
    assert work.trainings == 1
    assert work.shared_trainings == 1
    by_seed = {u.shared_training.seed: u for u in work.units}
    assert by_seed[0].checkpoint == b"checkpoint"
    assert by_seed[0].trainings == 0
    assert by_seed[1].checkpoint is None

    all_stored = plan(experiments, trained=lambda _key: b"checkpoint")
    assert all_stored.trainings == 0
    assert all_stored.shared_trainings == 0
    assert all_stored.experiments == 24


def test_an_empty_plan() -> None:
    work = plan([])
    assert work.units == ()
    assert (work.experiments, work.trainings, work.shared_trainings) == (0, 0, 0)


def test_a_cohort_that_trains_alone_is_cut_into_units_of_one() -> None:
    """A unit hands its results back when it ends: trained one at a time, each training is a
    unit of its own, so a stopped run keeps every one that finished."""
    stacked, alone = _noisy(5), _noisy(3, recipe={"lr": 0.01})
    work = plan([*stacked, *alone], alone=lambda e: e.recipe.lr == 0.01, workers=2)
    sizes = sorted((len(u.members), u.members[0].recipe.lr) for u in work.units)
    assert sizes == [(1, 0.01), (1, 0.01), (1, 0.01), (2, 0.001), (3, 0.001)]
    assert work.trainings == 8


def test_students_of_a_stored_teacher_that_train_alone_are_units_of_one() -> None:
    students = [
        Experiment(noise="none", weight_noise=eta, train_noise=True, distillation=Distillation())
        for eta in (0.0, 0.02, 0.04)
    ]
    work = plan(students, trained=lambda _key: b"teacher", alone=lambda _e: True)
    assert sorted(m.weight_noise for u in work.units for m in u.members) == [0.0, 0.02, 0.04]
    assert [len(u.members) for u in work.units] == [1, 1, 1]
    assert all(u.checkpoint == b"teacher" for u in work.units)
