"""Sweep files: axis values, block union, dedupe, determinism, ``walking:*`` and errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from torch import nn

from walkingnoise.models import register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import (
    MAX_SWEEP_BYTES,
    SweepError,
    SweepTooLargeError,
    count_experiments,
    expand,
    expand_counted,
    load_sweep,
    parse_sweep,
)

from .helpers import spec


@pytest.fixture(scope="module")
def sites() -> SiteCounter:
    return SiteCounter()


def _values(text: str, field: str) -> list:
    entries = expand(spec(text))
    return [getattr(entry.experiment, field) for entry in entries]


# -- axis kinds -------------------------------------------------------------------------------


def test_choice_keeps_the_options_in_order() -> None:
    sigmas = _values(
        """
        fixed: {noise: additive}
        grid: {sigma: {type: choice, options: [0.5, 0.1, 2]}}
        """,
        "sigma",
    )
    assert sigmas == [0.5, 0.1, 2.0]


def test_range_of_integers_excludes_max_and_stays_integer() -> None:
    seeds = _values(
        """
        fixed: {noise: none}
        grid: {seed: {type: range, min: 0, max: 7, step: 2}}
        """,
        "seed",
    )
    assert seeds == [0, 2, 4, 6]
    assert all(type(s) is int for s in seeds)


def test_range_default_step_is_one() -> None:
    seeds = _values("fixed: {noise: none}\ngrid: {seed: {type: range, min: 2, max: 5}}", "seed")
    assert seeds == [2, 3, 4]


def test_range_of_floats() -> None:
    sigmas = _values(
        """
        fixed: {noise: additive}
        grid: {sigma: {type: range, min: 0.5, max: 2, step: 0.5}}
        """,
        "sigma",
    )
    assert sigmas == [0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ("min: 1.0, max: 1.3, step: 0.1", [1.0, 1.1, 1.2]),
        ("min: 0.1, max: 0.4, step: 0.1", [0.1, 0.2, 0.3]),
        ("min: 0.0, max: 1.0, step: 0.3", [0.0, 0.3, 0.6, 0.9]),
        ("min: 1.0, max: 0.0, step: -0.25", [1.0, 0.75, 0.5, 0.25]),
    ],
)
def test_range_of_floats_leaves_out_max_and_gives_the_numbers_as_written(
    bounds: str, expected: list[float]
) -> None:
    """Rounding must neither add max as a last value nor make 0.3 another σ than 0.3."""
    text = f"fixed: {{noise: additive}}\ngrid: {{sigma: {{type: range, {bounds}}}}}"
    assert _values(text, "sigma") == expected
    assert count_experiments(parse_sweep(text)) == len(expected)


def test_range_with_negative_step_counts_down() -> None:
    seeds = _values(
        """
        fixed: {noise: none}
        grid: {seed: {type: range, min: 9, max: 0, step: -3}}
        """,
        "seed",
    )
    assert seeds == [9, 6, 3]


def test_linspace_includes_both_ends() -> None:
    sigmas = _values(
        """
        fixed: {noise: multiplicative}
        grid: {sigma: {type: linspace, min: 0, max: 2, num: 5}}
        """,
        "sigma",
    )
    assert sigmas == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_logspace_bounds_are_exponents() -> None:
    sigmas = _values(
        """
        fixed: {noise: additive}
        grid: {sigma: {type: logspace, min: -2, max: 1, num: 4}}
        """,
        "sigma",
    )
    assert sigmas == pytest.approx([0.01, 0.1, 1.0, 10.0], rel=1e-12)


def test_grid_over_a_nested_field_in_dotted_form() -> None:
    epochs = _values(
        """
        fixed: {noise: none}
        grid: {recipe.epochs: {type: choice, options: [1, 3]}}
        """,
        "recipe",
    )
    assert [r.epochs for r in epochs] == [1, 3]


# -- blocks ---------------------------------------------------------------------------------

UNION = """
fixed:
  noise: additive
  recipe: {epochs: 1, lr: 0.01}
grid:
  seed: {type: choice, options: [0, 1]}
  sigma: {type: choice, options: [0.1, 0.2, 0.3]}
small:
  fixed:
    sigma: 5.0            # a fixed value replaces the parent's σ axis
walks:
  fixed:
    placement: "walking:2"
  grid:
    recipe.epochs: {type: choice, options: [2, 3]}   # an axis replaces a fixed nested value
  deeper:
    fixed:
      seed: 7             # the grandchild fixes the root's seed axis
    grid:
      sigma: {type: choice, options: [0.4, 0.5]}      # and replaces σ with its own axis
"""


def test_block_union_counts_and_overrides() -> None:
    entries = expand(spec(UNION))
    by_block: dict[str, list] = {}
    for entry in entries:
        by_block.setdefault(entry.block, []).append(entry.experiment)
    # small: 2 seeds × σ fixed; walks.deeper: seed fixed × 2 σ × 2 epochs. The root and ``walks``
    # have sub-blocks, so they are not leaves and contribute nothing of their own.
    assert sorted(by_block) == ["small", "walks.deeper"]
    assert len(by_block["small"]) == 2
    assert len(by_block["walks.deeper"]) == 4
    assert len(entries) == 6
    assert count_experiments(spec(UNION)) == 6

    small = by_block["small"]
    assert {e.seed for e in small} == {0, 1}
    assert {e.sigma for e in small} == {5.0}
    assert {(e.recipe.epochs, e.recipe.lr, e.placement) for e in small} == {(1, 0.01, "global")}

    deeper = by_block["walks.deeper"]
    assert {e.seed for e in deeper} == {7}
    assert {(e.sigma, e.recipe.epochs) for e in deeper} == {
        (0.4, 2),
        (0.4, 3),
        (0.5, 2),
        (0.5, 3),
    }
    # The nested fixed value the axis did not replace is inherited.
    assert {e.recipe.lr for e in deeper} == {0.01}
    assert {e.placement for e in deeper} == {"walking:2"}


def test_a_leaf_without_sub_blocks_is_the_root() -> None:
    entries = expand(
        spec("fixed: {noise: additive, sigma: 0.1}\ngrid: {seed: {type: range, min: 0, max: 3}}")
    )
    assert [e.block for e in entries] == ["root"] * 3


def test_the_same_experiment_from_two_blocks_is_counted_once() -> None:
    text = """
    fixed: {noise: additive}
    a:
      grid:
        sigma: {type: choice, options: [0.1, 0.2]}
    b:
      grid:
        sigma: {type: choice, options: [0.2, 0.3]}
    """
    entries = expand(spec(text))
    assert [e.experiment.sigma for e in entries] == [0.1, 0.2, 0.3]
    # The first block that produced an experiment names it.
    assert [e.block for e in entries] == ["a", "a", "b"]
    assert count_experiments(spec(text)) == 4  # an upper bound: duplicates not yet removed
    assert len({e.experiment.content_hash() for e in entries}) == 3


def test_experiments_differing_only_in_irrelevant_fields_are_one() -> None:
    # ``order`` only matters for mixed noise: two blocks that differ only in it give one experiment.
    text = """
    fixed: {noise: additive, sigma: 0.3}
    first:
      fixed: {order: mul_first}
    second:
      fixed: {order: add_first}
    """
    assert len(expand(spec(text))) == 1
    entries, repeats = expand_counted(spec(text))
    assert (len(entries), repeats.count) == (1, 1)
    assert repeats.example == "order mul_first and add_first (blocks first and second)"


def test_grid_points_that_repeat_an_experiment_are_counted_with_an_example() -> None:
    """Without noise σ cannot matter: the σ grid under ``noise: none`` is one experiment."""
    text = """
    fixed: {placement: "walking:1", train_noise: false}
    grid:
      noise: {type: choice, options: [additive, none]}
      sigma: {type: choice, options: [0.1, 1.0, 10.0]}
    """
    entries, repeats = expand_counted(spec(text))
    assert [e.experiment.noise for e in entries] == ["additive"] * 3 + ["none"]
    assert repeats.count == 2
    assert repeats.example == "sigma 0.1 and 1.0 (block root)"
    assert expand_counted(spec(UNION))[1].count == 0


def test_expansion_is_deterministic(sites: SiteCounter) -> None:
    text = UNION + "\nall_sites:\n  fixed: {placement: 'walking:*', sigma: 1.0}\n"
    first = [e.experiment.content_hash() for e in expand(spec(text), site_count=sites)]
    second = [e.experiment.content_hash() for e in expand(spec(text), site_count=SiteCounter())]
    assert first == second
    assert len(first) == len(set(first)) == 6 + 2 * 11


@pytest.mark.parametrize(("batchnorm", "count"), [(True, 11), (False, 8)])
def test_walking_star_is_one_experiment_per_site(
    sites: SiteCounter, batchnorm: bool, count: int
) -> None:
    text = f"""
    fixed:
      dataset: digits
      model: mlp
      batchnorm: {str(batchnorm).lower()}
      noise: additive
      sigma: 0.5
      placement: "walking:*"
    """
    entries = expand(spec(text), site_count=sites)
    assert [e.experiment.placement for e in entries] == [f"walking:{i}" for i in range(count)]


def test_walking_star_for_both_batchnorm_flags(sites: SiteCounter) -> None:
    text = """
    fixed: {noise: additive, sigma: 0.5, placement: "walking:*"}
    grid: {batchnorm: {type: choice, options: [true, false]}}
    """
    entries = expand(spec(text), site_count=sites)
    assert len(entries) == 11 + 8
    assert count_experiments(spec(text)) == 2  # walking:* counted as one before expansion


def test_walking_star_without_a_site_count_is_an_error() -> None:
    with pytest.raises(SweepError, match=r"^fixed\.placement: walking:\* needs"):
        expand(spec("fixed: {noise: additive, sigma: 0.5, placement: 'walking:*'}"))


# -- errors -------------------------------------------------------------------------------------

ERRORS = [
    ("fixed: {sigmaa: 1}", "fixed.sigmaa", "unknown key; known: dataset, model"),
    (
        "a:\n  fixed:\n    recipe: {epoch: 3}",
        "a.fixed.recipe.epoch",
        "known: epochs, batch_size, lr, weight_decay, schedule, clamp, eval_batch_size",
    ),
    (
        "fixed: {noise: none}\ngrid: {recipe.epoch: {type: choice, options: [1]}}",
        "grid.recipe.epoch",
        "known: epochs",
    ),
    ("fixed: {noise: none, seed: abc}", "fixed.seed", "integer"),
    ("b:\n  fixed: {noise: none, seed: -1}", "b.fixed.seed", "greater than or equal to 0"),
    (
        "fixed: {noise: additive}\ngrid: {sigma: {type: choice, options: [0.1, -1]}}",
        "grid.sigma",
        "sigma must be finite and ≥ 0, got -1.0",
    ),
    (
        "fixed: {noise: additive}\ngrid: {sigma: {type: choice, options: [0.1, .nan]}}",
        "grid.sigma",
        "got nan",
    ),
    ("grid: {sigma: {type: choice, options: []}}", "grid.sigma.options", "at least 1 item"),
    ("grid: {sigma: {type: logspace, min: 0, max: 1}}", "grid.sigma.num", "Field required"),
    (
        "grid: {sigma: {type: geomspace, min: 0, max: 1}}",
        "grid.sigma.type",
        "unknown axis type 'geomspace'; choose choice, range, linspace, logspace, adaptive",
    ),
    ("grid: {sigma: [0.1, 0.2]}", "grid.sigma", "a grid axis is a mapping with type"),
    ("grid: {seed: {type: range, min: 0, max: 3, step: 0}}", "grid.seed", "step must not be 0"),
    ("grid: {seed: {type: range, min: 0, max: .inf}}", "grid.seed", "max must be finite"),
    (
        "grid: {sigma: {type: adaptive, min: -2, max: 400}}",
        "grid.sigma",
        "max is an exponent of 10: 400 gives 10^400, beyond the float32 noise levels "
        "(give -38 … 38)",
    ),
    (
        "grid: {sigma: {type: logspace, min: -46, max: 1, num: 3}}",
        "grid.sigma",
        "min is an exponent of 10: -46 gives 10^-46, beyond the float32 noise levels "
        "(give -38 … 38)",
    ),
    (
        "grid: {sigma: {type: adaptive, min: -2, max: 2, tolerence: 0.1}}",
        "grid.sigma.tolerence",
        "unknown key of an adaptive axis; known: type, min, max, initial, max_points, per_round,"
        " tolerance",
    ),
    (
        "grid: {sigma: {type: logspace, min: 0, max: 1, number: 3}}",
        "grid.sigma.number",
        "unknown key of a logspace axis; known: type, min, max, num",
    ),
    ("fixed: {noise: none}\nsub: [1, 2]", "sub", "a block must be a mapping"),
    ("outer:\n  inner: 3", "outer.inner", "a block must be a mapping"),
    (
        "dataset: digits\nfixed: {noise: none}",
        "dataset",
        "not str (dataset is an experiment setting: put it under fixed: or grid:)",
    ),
    ("fixed: [1, 2]", "fixed", "must be a mapping"),
    ("fixed: {noise: additive, sigma: 0.1, dataset: nope}", "fixed.dataset", "unknown dataset"),
    ("fixed: {noise: additive, sigma: 0.1, model: nope}", "fixed.model", "unknown model"),
    (
        "fixed: {noise: additive, sigma: 0.1, placement: 'walk:3'}",
        "fixed.placement",
        "bad placement",
    ),
    (
        "fixed: {noise: additive}\ngrid: {sigma: {type: choice, options: [null, 0.1]}}",
        "grid.sigma",
        "noise 'additive' with placement 'global' needs sigma",
    ),
    (
        "a:\n  fixed: {noise: additive, sigma: 0.1, placement: 'map:0=0.1'}",
        "a.fixed.sigma",
        "carries its own σ values; leave sigma unset",
    ),
    ("b:\n  fixed: {noise: additive}", "b", "needs sigma"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), ERRORS, ids=[e[1] for e in ERRORS])
def test_errors_are_one_line_starting_with_the_yaml_path(
    sites: SiteCounter, text: str, path: str, fragment: str
) -> None:
    with pytest.raises(SweepError) as caught:
        expand(parse_sweep(text, "bad.yaml"), site_count=sites)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert fragment in message


def test_an_empty_range_names_its_path_once() -> None:
    with pytest.raises(SweepError) as caught:
        parse_sweep("grid: {seed: {type: range, min: 3, max: 0}}")
    assert str(caught.value) == "grid.seed: the axis has no values"


def test_a_model_without_one_logit_per_class_is_refused_at_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked when the sweep is expanded, before anything runs (it would fail every
    experiment in its loss)."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("three-logits")(
        lambda shape, classes, *, batchnorm: nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    )
    text = "a:\n  fixed: {model: three-logits, batchnorm: false, noise: none}"
    with pytest.raises(SweepError) as caught:
        expand(parse_sweep(text), site_count=SiteCounter())
    message = str(caught.value)
    assert message.startswith("a.fixed.model: model 'three-logits' gives shape (2, 3)"), message
    assert "logits of shape (2, 10)" in message


def test_site_beyond_the_model_names_the_number_of_sites(sites: SiteCounter) -> None:
    text = "fixed: {noise: additive, sigma: 0.1, batchnorm: true, placement: 'walking:11'}"
    with pytest.raises(SweepError) as caught:
        expand(parse_sweep(text), site_count=sites)
    message = str(caught.value)
    assert message.startswith("fixed.placement: site 11 is beyond the 11 noise sites")
    # The same index is fine for a model with more sites, and 8 is beyond the MLP without BN.
    assert len(expand(parse_sweep(text.replace("11", "10")), site_count=sites)) == 1
    text = "fixed: {noise: additive, sigma: 0.1, batchnorm: false, placement: 'walking:8'}"
    with pytest.raises(SweepError, match=r"^fixed\.placement: site 8 .* 8 noise sites"):
        expand(parse_sweep(text), site_count=sites)


def test_a_map_placement_site_beyond_the_model(sites: SiteCounter) -> None:
    text = """
    fixed: {noise: additive}
    grid: {placement: {type: choice, options: ["map:0=0.1;12=0.2"]}}
    """
    with pytest.raises(SweepError, match=r"^grid\.placement: site 12 is beyond the 11"):
        expand(spec(text), site_count=sites)


def test_yaml_syntax_error_names_the_file_and_line() -> None:
    text = "fixed:\n  noise: additive\n  sigma: [0.1\n  seed: 1\n"
    with pytest.raises(SweepError) as caught:
        parse_sweep(text, "broken.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("broken.yaml: YAML syntax error at line 4")


def test_non_utf8_bytes_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("fixed: {noise: none}\n# σ\n".encode("utf-16"))
    with pytest.raises(SweepError, match=r"not UTF-8 text \(byte 0xff at offset 0\)") as caught:
        load_sweep(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("text", ["", "\n# only a comment\n"])
def test_an_empty_file_is_an_error(text: str) -> None:
    with pytest.raises(SweepError, match=r"^empty\.yaml: the sweep file is empty$"):
        parse_sweep(text, "empty.yaml")


def test_a_missing_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="no such sweep file"):
        load_sweep(tmp_path / "absent.yaml")


def _deep_blocks(levels: int) -> str:
    """A sweep of blocks nested ``levels`` deep, each a valid block."""
    return "".join(f"{'  ' * i}b{i}:\n" for i in range(levels)) + "  " * levels + "fixed: {}\n"


@pytest.mark.parametrize(
    "text",
    ["fixed: " + "[" * 100_000 + "]" * 100_000, _deep_blocks(3000)],
    ids=["deep-flow", "deep-blocks"],
)
def test_a_sweep_nested_beyond_reason_is_one_error(text: str) -> None:
    """Python's recursion limit stops the YAML parser (blocks 300 deep still parse)."""
    with pytest.raises(SweepError, match=r"^deep\.yaml: nested too deeply to be a sweep file$"):
        parse_sweep(text, "deep.yaml")


def test_a_sweep_file_that_is_no_regular_file_or_too_large_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    with pytest.raises(SweepError, match="is not a regular file"):
        load_sweep(fifo)
    with pytest.raises(SweepError, match="is not a regular file"):
        load_sweep("/dev/zero")  # would fill the memory
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (MAX_SWEEP_BYTES + 1))
    with pytest.raises(SweepError, match="larger than 1,000,000 bytes"):
        load_sweep(huge)
    with pytest.raises(SweepError, match="is a directory"):
        load_sweep(tmp_path)


@pytest.mark.parametrize("value", ["[1, 2]", "''", "true", "", "{a: 1}"])
def test_a_sweep_name_must_be_text(value: str) -> None:
    """It names the sweep in the store and the report: a list or nothing is a slip."""
    with pytest.raises(SweepError, match=r"^s\.yaml: name: must be text, got "):
        parse_sweep(f"name: {value}\nfixed: {{noise: none}}\n", "s.yaml")
    assert parse_sweep("name: 7\nfixed: {noise: none}\n", "s.yaml").name == "7"


def test_the_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SweepError, match=r"^<sweep>: a block must be a mapping"):
        parse_sweep("- 1\n- 2\n")


def test_name_and_description_are_metadata_not_blocks(tmp_path: Path) -> None:
    parsed = parse_sweep("name: study\ndescription: text\nfixed: {noise: none}")
    assert parsed.name == "study"
    assert len(expand(parsed)) == 1
    path = tmp_path / "unnamed.yaml"
    path.write_text("fixed: {noise: none}")
    assert load_sweep(path).name == "unnamed"


# -- size -----------------------------------------------------------------------------------


def test_a_huge_grid_is_refused_before_any_experiment_is_built() -> None:
    # The fixed dataset is invalid: building even one experiment would raise that error instead.
    text = """
    fixed: {dataset: nope, noise: additive}
    grid:
      sigma: {type: logspace, min: -2, max: 2, num: 1000000}
      seed: {type: logspace, min: 0, max: 3, num: 1000000}
    """
    started = time.perf_counter()
    with pytest.raises(SweepTooLargeError) as caught:
        expand(spec(text, "huge.yaml"))
    assert time.perf_counter() - started < 10.0
    message = str(caught.value)
    assert message.startswith("huge.yaml: the sweep has 1000000000000 experiments")
    assert "--yes" in message


def test_the_default_limit_is_20000() -> None:
    text = "fixed: {{noise: none}}\ngrid: {{seed: {{type: range, min: 0, max: {n}}}}}"
    with pytest.raises(SweepTooLargeError, match="limit of 20000"):
        expand(spec(text.format(n=20_001)))
    assert count_experiments(spec(text.format(n=20_001))) == 20_001


def test_no_limit_runs_a_sweep_above_the_limit() -> None:
    text = """
    fixed: {noise: additive}
    grid:
      sigma: {type: linspace, min: 0, max: 1, num: 30}
      seed: {type: range, min: 0, max: 10}
    """
    with pytest.raises(SweepTooLargeError):
        expand(spec(text), max_experiments=299)
    assert len(expand(spec(text), max_experiments=None)) == 300
    assert len(expand(spec(text), max_experiments=300)) == 300


def test_walking_star_beyond_the_limit_is_caught_while_expanding(sites: SiteCounter) -> None:
    text = """
    fixed: {noise: additive, placement: "walking:*"}
    grid: {sigma: {type: logspace, min: -1, max: 1, num: 5}}
    """
    assert count_experiments(spec(text)) == 5
    with pytest.raises(SweepTooLargeError, match="more than 20 experiments"):
        expand(spec(text), site_count=sites, max_experiments=20)
    assert len(expand(spec(text), site_count=sites, max_experiments=55)) == 55


def test_walking_star_stops_being_built_soon_after_the_limit(
    sites: SiteCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge grid of walking:* is refused once the limit is passed, not after all of it."""
    from walkingnoise.sweep import spec as spec_module

    built = []
    expand_sites = spec_module._expand_sites

    def counted(*args):
        for experiment in expand_sites(*args):
            built.append(experiment)
            yield experiment

    monkeypatch.setattr(spec_module, "_expand_sites", counted)
    text = """
    fixed: {noise: additive, placement: "walking:*"}
    grid: {sigma: {type: logspace, min: -1, max: 1, num: 15}}
    """
    with pytest.raises(SweepTooLargeError, match="more than 20 experiments"):
        expand(spec(text), site_count=sites, max_experiments=20)
    assert len(built) <= 20 + 11  # the limit and at most one σ's 11 sites more


def test_count_experiments_multiplies_axes_and_adds_leaves() -> None:
    text = """
    grid:
      seed: {type: range, min: 0, max: 3}
    a:
      grid:
        sigma: {type: linspace, min: 0, max: 1, num: 4}
        recipe.epochs: {type: choice, options: [1, 2]}
    b:
      fixed: {seed: 0}
      grid:
        sigma: {type: logspace, min: 0, max: 1, num: 5}
    """
    assert count_experiments(spec(text)) == 3 * 4 * 2 + 5


@pytest.mark.parametrize(("name", "meant"), [("fixd", "fixed"), ("gird", "grid")])
def test_a_misspelt_fixed_or_grid_is_named(name: str, meant: str) -> None:
    with pytest.raises(SweepError, match=rf"^{name}: unknown key; did you mean '{meant}'\?$"):
        parse_sweep(f"{name}:\n  seed: 1\n")


# -- σ pairs of mixed noise -------------------------------------------------------------------


def test_sigma_mul_and_sigma_add_axes_make_a_map_of_pairs() -> None:
    pairs = _values(
        """
        fixed: {noise: mixed, placement: "walking:2"}
        grid:
          sigma_mul: {type: choice, options: [0.1, 1.0]}
          sigma_add: {type: choice, options: [0.5, 2.0, 8.0]}
        """,
        "sigma",
    )
    assert sorted(pairs) == sorted((m, a) for m in (0.1, 1.0) for a in (0.5, 2.0, 8.0))


def test_a_ratio_beside_a_sigma_pair_is_named() -> None:
    """A ratio reads a scalar σ as an amplitude; beside a pair it would change nothing but
    the experiments' hashes (one computation stored twice), so it is refused where it is."""
    text = (
        'fixed: {noise: mixed, placement: "walking:2", sigma_mul: 0.5, sigma_add: 0.1}\n'
        "grid: {ratio: {type: choice, options: [0.1, 0.5]}}"
    )
    with pytest.raises(SweepError, match=r"^grid\.ratio: .*sigma_mul/sigma_add"):
        expand(spec(text))


def test_sigma_mul_without_sigma_add_names_the_key() -> None:
    with pytest.raises(SweepError, match=r"^grid\.sigma_mul: needs sigma_add"):
        expand(spec("fixed: {noise: mixed}\ngrid: {sigma_mul: {type: choice, options: [1]}}"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "fixed: {noise: mixed, sigma_add: 0.1}\n"
            "grid: {sigma_mull: {type: choice, options: [1]}}",
            r"^grid\.sigma_mull: unknown key; did you mean sigma_mul\?$",
        ),
        (
            "fixed: {noise: mixed, sigma_mul: 0.1, sigma_ad: 0.1}",
            r"^fixed\.sigma_ad: .*sigma_add\?$",
        ),
        ("fixed: {noise: mixed, colour: red}", r"^fixed\.colour: unknown key; known: .*sigma_add$"),
    ],
    ids=["grid", "fixed", "known"],
)
def test_a_misspelt_half_of_the_sigma_pair_is_named(text: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        expand(spec(text))


def test_negative_sigma_add_is_reported_at_the_pair() -> None:
    with pytest.raises(SweepError, match=r"^grid\.sigma_mul: .*sigma must be finite"):
        expand(
            spec(
                "fixed: {noise: mixed, sigma_add: -1}\n"
                "grid: {sigma_mul: {type: choice, options: [1]}}"
            )
        )


def test_a_key_given_twice_is_an_error_not_the_last_value() -> None:
    text = "name: twice\nfixed:\n  dataset: digits\n  model: mlp\n  model: lenet5\n"
    with pytest.raises(SweepError, match=r"line 5.*'model' is given twice \(first at line 4\)"):
        parse_sweep(text, "twice.yaml")
    merged = "name: merged\nfixed:\n  <<: {model: lenet5, noise: none}\n  model: mlp\n"
    entries = expand(parse_sweep(merged, "merged.yaml"))  # a merge key's value may be overridden
    assert [entry.experiment.model for entry in entries] == ["mlp"]
    # an anchored mapping that overrides what it merges, merged itself by a shallower mapping
    nested = (
        "name: nested\n"
        "a:\n  b:\n    fixed: &w {<<: {noise: none, model: lenet5}, model: mlp}\n"
        "c:\n  fixed: {<<: *w, seed: 1}\n"
    )
    entries = expand(parse_sweep(nested, "nested.yaml"))
    assert sorted((e.experiment.model, e.experiment.seed) for e in entries) == [
        ("mlp", 0),
        ("mlp", 1),
    ]


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        (
            "seed: {type: range, min: 0, max: true}",
            r"^grid\.seed: max: expected a number, got true",
        ),
        (
            "sigma: {type: logspace, min: false, max: 1, num: 2}",
            r"^grid\.sigma: min: expected a number, got false",
        ),
    ],
    ids=["range", "logspace"],
)
def test_an_axis_parameter_is_a_number_not_a_bool(axis: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        expand(spec(f"fixed: {{sigma: 0.1}}\ngrid: {{{axis}}}"))
    choices = expand(
        spec("fixed: {sigma: 0.1}\ngrid: {train_noise: {type: choice, options: [true, false]}}")
    )
    assert sorted(entry.experiment.train_noise for entry in choices) == [False, True]
