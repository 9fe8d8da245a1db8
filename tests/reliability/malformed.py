"""Hypothesis strategies for malformed sweep files, each with the YAML path its error must name.

Every case starts from one valid sweep and breaks it in one way: a wrong type, an unknown key,
an empty or huge grid, a negative / NaN / infinite σ, broken YAML, bytes that are not UTF-8, or a
wrong overall shape. ``where`` is the dotted YAML path of what was broken, or ``""`` when the
error belongs to the file as a whole (syntax, encoding, size).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

from walkingnoise.experiment import Experiment
from walkingnoise.training.recipe import Recipe

#: A valid sweep: 3 σ × 2 sites, inference-only (its one leaf block, "inference"): 6 experiments.
BASE: dict[str, Any] = {
    "name": "base",
    "fixed": {
        "dataset": "digits",
        "model": "mlp",
        "batchnorm": True,
        "noise": "additive",
        "train_noise": True,
        "eval_repeats": 1,
        "recipe": {"epochs": 1},
    },
    "grid": {
        "sigma": {"type": "logspace", "min": -1, "max": 1, "num": 3},
        "placement": {"type": "choice", "options": ["walking:0", "walking:3"]},
    },
    "inference": {"fixed": {"train_noise": False}},
}

#: Values that no field at these paths accepts (pydantic's lax coercions considered).
WRONG_VALUES: dict[tuple[str, ...], list[Any]] = {
    ("fixed", "dataset"): [5, 1.5, True, None, ["digits"], "no-such-dataset", ""],
    ("fixed", "model"): [7, False, None, ["mlp"], "resnet9000", "mlp "],
    ("fixed", "noise"): [3, None, "loud", ["additive"], "ADDITIVE"],
    ("fixed", "batchnorm"): ["perhaps", 2, 0.5, None, ["yes"]],
    ("fixed", "eval_repeats"): ["many", 1.5, 0, -2, [1], None],
    ("fixed", "recipe"): [5, "fast", [1, 2], True],
    ("fixed", "recipe", "epochs"): ["ten", 2.5, 0, -1, [1], None],
    ("fixed", "recipe", "lr"): ["fast", 0, -0.1, [0.1], None],
    ("fixed", "recipe", "schedule"): ["linear", 1, None],
    ("fixed", "seed"): [-1, "first", 0.5, [0]],
    ("fixed", "placement"): ["walking", "walking:-1", "walking:99", "around", 3, None],
    ("fixed",): [5, "digits", [1, 2], True],
    ("grid",): [5, "sigma", [1, 2], True],
    ("grid", "sigma"): [0.1, "logspace", [0.1, 1.0], None, True],
    ("grid", "sigma", "type"): ["logarithmic", 5, None, ["logspace"], "LOGSPACE"],
    ("grid", "sigma", "min"): ["low", None, [1], {"a": 1}],
    ("grid", "sigma", "num"): ["three", "1e6", 2.5, 0, -4, None, [3]],
    ("grid", "placement", "options"): ["walking:0", 5, None, [], {"a": 1}],
    ("inference",): [5, "text", [1], None],
    ("inference", "fixed"): [5, "text", [1, 2]],
    ("inference", "fixed", "train_noise"): ["perhaps", 2, [True], None],
}

#: Names a sweep may use anywhere, so never "unknown".
KNOWN_KEYS = frozenset(
    {*Experiment.model_fields, *Recipe.model_fields, "fixed", "grid", "name", "description"}
    | {"type", "options", "min", "max", "step", "num", "initial", "max_points", "per_round"}
    | {"tolerance", "sigma_mul", "sigma_add", "inference"}
)

#: Axes with no value at all.
EMPTY_AXES: list[Any] = [
    {"type": "choice", "options": []},
    {"type": "range", "min": 1, "max": 1},
    {"type": "range", "min": 5, "max": 1, "step": 1},
    {"type": "range", "min": 0, "max": 5, "step": -1},
    {"type": "range", "min": 0, "max": 5, "step": 0},
    {"type": "linspace", "min": 0, "max": 1, "num": 0},
    {"type": "logspace", "min": 0, "max": 1, "num": 0},
    {},
    {"type": "choice"},
    {"options": [0.1]},
    {"type": "adaptive", "min": 1, "max": 1},
]

#: σ that no noise accepts.
BAD_SIGMAS: list[Any] = [-1, -1e-9, -math.inf, math.inf, math.nan, -1e300]

#: Edits after which the text is not YAML any more (or not YAML a safe loader builds).
BROKEN_YAML = [
    "\nextra: [unclosed, list\n",
    '\nextra: "unterminated string\n',
    "\nextra: *undefined_alias\n",
    "\n\textra: tab-indented\n",
    "\nextra: !!python/object/apply:os.system ['echo unsafe']\n",
    "\nextra: !!python/name:os.system\n",
    "\n- a list item after a mapping\n",
    "\nfixed: {a: 1\n",
    "\n  misindented: 1\nmore: [\n",
    "\n? [complex, key]\n: value\n",
    "\nextra: \x00 nul\n",
    "\nextra: \x07 bell\n",
    "\n%YAML 9.9\n---\n",
]

#: Bytes that never occur in UTF-8.
NOT_UTF8 = [b"\xc0", b"\xc1", *(bytes([b]) for b in range(0xF5, 0x100))]


@dataclass(frozen=True)
class Malformed:
    """A malformed sweep file: its bytes, what was broken and the path its error must name."""

    kind: str
    data: bytes
    where: str

    def __repr__(self) -> str:
        return f"Malformed({self.kind!r}, where={self.where!r}, data={self.data!r})"


def dump(document: Any) -> bytes:
    """YAML text of ``document`` (block style, keys in order)."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode("utf-8")


def _set(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``BASE`` with the value at ``path`` replaced (or added)."""
    document = copy.deepcopy(BASE)
    if not path:
        return value
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def _axis_level(path: tuple[str, ...]) -> str:
    """Where an error about ``path`` is reported: an axis's ``type`` at the axis itself."""
    return _dotted(path[:-1] if path[-1] == "type" else path)


def wrong_types() -> st.SearchStrategy[Malformed]:
    """A value no field at its place accepts."""
    return st.sampled_from(sorted(WRONG_VALUES)).flatmap(
        lambda path: st.sampled_from(WRONG_VALUES[path]).map(
            lambda value: Malformed("wrong type", dump(_set(path, value)), _axis_level(path))
        )
    )


_NAME = st.from_regex(r"[a-z][a-z_]{1,12}", fullmatch=True).filter(lambda k: k not in KNOWN_KEYS)
_ODD_NAME = st.sampled_from(["", " ", "a.b", "ü", "x y", "sigma.", ".sigma", "1", "a:b", "-"])
_SCALAR = st.one_of(
    st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.booleans(), st.text(max_size=8)
)


def unknown_keys() -> st.SearchStrategy[Malformed]:
    """A key that is no field, axis option or block; at block level it holds a scalar."""
    places: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
        (("fixed",), _SCALAR),
        (("fixed", "recipe"), _SCALAR),
        (("grid", "sigma"), _SCALAR),
        (("grid",), st.just({"type": "choice", "options": [1, 2]})),
        (("inference", "fixed"), _SCALAR),
        ((), st.one_of(st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=2))),
        (("inference",), st.one_of(st.integers(), st.text(max_size=8))),
    ]

    def build(place: int, key: str, value: Any) -> Malformed:
        path, _ = places[place]
        document = copy.deepcopy(BASE)
        node = document
        for part in path:
            node = node[part]
        node[key] = value
        empty_part = any(not part.strip() for part in key.split("."))
        where = _dotted(path) if empty_part else _dotted((*path, key))
        return Malformed("unknown key", dump(document), where)

    return st.integers(0, len(places) - 1).flatmap(
        lambda i: st.builds(build, st.just(i), st.one_of(_NAME, _ODD_NAME), places[i][1])
    )


def non_string_keys() -> st.SearchStrategy[Malformed]:
    """A mapping key that YAML reads as a number, a boolean or null."""

    def build(place: tuple[str, ...], key: str) -> Malformed:
        text = dump(BASE).decode()
        if place:
            anchor = {"fixed": "fixed:\n", "recipe": "  recipe:\n"}[place[-1]]
            indent = "  " if place == ("fixed",) else "    "
            text = text.replace(anchor, f"{anchor}{indent}{key}: 1\n", 1)
        else:
            text = f"{key}: 1\n{text}"
        return Malformed("unknown key", text.encode(), _dotted(place))

    keys = st.sampled_from(["1", "2.5", "true", "null", "~", "-3"])
    return st.builds(build, st.sampled_from([(), ("fixed",), ("fixed", "recipe")]), keys)


def empty_grids() -> st.SearchStrategy[Malformed]:
    """An axis with no values (or no type)."""
    return st.sampled_from(EMPTY_AXES).map(
        lambda axis: Malformed("empty grid", dump(_set(("grid", "sigma"), axis)), "grid.sigma")
    )


def huge_grids() -> st.SearchStrategy[Malformed]:
    """More experiments than the limit, from one axis or the product of several."""
    logspace = st.integers(20_001, 10**18).map(
        lambda n: _set(("grid", "sigma"), {"type": "logspace", "min": -2, "max": 2, "num": n})
    )
    tiny_step = st.tuples(st.integers(3, 300), st.integers(4, 300)).map(
        lambda e: _set(
            ("grid", "sigma"),
            {"type": "range", "min": 0, "max": 10.0 ** e[0], "step": 10.0 ** -e[1]},
        )
    )
    product = st.tuples(st.integers(150, 10**6), st.integers(150, 10**6)).map(
        lambda n: _set(
            ("grid",),
            {
                "sigma": {"type": "linspace", "min": 0, "max": 1, "num": n[0]},
                "seed": {"type": "range", "min": 0, "max": n[1]},
                "placement": {"type": "choice", "options": ["walking:0", "walking:3"]},
            },
        )
    )
    grids = st.one_of(logspace, tiny_step, product)
    return grids.map(lambda document: Malformed("huge grid", dump(document), ""))


def bad_sigmas() -> st.SearchStrategy[Malformed]:
    """σ negative, NaN or infinite: fixed, among choices, from an axis, or in a mixed pair."""
    bad = st.sampled_from(BAD_SIGMAS)

    def fixed(value: float) -> Malformed:
        document = copy.deepcopy(BASE)
        del document["grid"]["sigma"]
        document["fixed"]["sigma"] = value
        return Malformed("bad sigma", dump(document), "fixed.sigma")

    def choice(value: float) -> Malformed:
        axis = {"type": "choice", "options": [0.1, value]}
        return Malformed("bad sigma", dump(_set(("grid", "sigma"), axis)), "grid.sigma")

    def linspace(low: float) -> Malformed:  # finite: negative values; else: a bad bound
        axis = {"type": "linspace", "min": low, "max": 1.0, "num": 3}
        return Malformed("bad sigma", dump(_set(("grid", "sigma"), axis)), "grid.sigma")

    def pair(value: float) -> Malformed:
        document = copy.deepcopy(BASE)
        del document["grid"]["sigma"]
        document["fixed"] |= {"noise": "mixed", "sigma_mul": 0.1, "sigma_add": value}
        return Malformed("bad sigma", dump(document), "fixed.sigma_mul")

    return st.one_of(
        bad.map(fixed),
        bad.map(choice),
        st.sampled_from([-5.0, -1e-3, math.nan, -math.inf, math.inf]).map(linspace),
        bad.map(pair),
    )


def broken_yaml() -> st.SearchStrategy[Malformed]:
    """The valid text with an edit that no YAML safe loader accepts."""

    def build(edit: str, at_end: bool) -> Malformed:
        text = dump(BASE).decode()
        text = text + edit if at_end else edit.lstrip("\n") + text
        return Malformed("yaml syntax", text.encode("utf-8"), "")

    return st.builds(build, st.sampled_from(BROKEN_YAML), st.booleans())


def not_utf8() -> st.SearchStrategy[Malformed]:
    """Bytes that are not UTF-8 somewhere in the file, or the whole file in UTF-16."""
    text = dump(BASE)

    def insert(offset: int, byte: bytes) -> Malformed:
        at = offset % (len(text) + 1)
        return Malformed("not utf-8", text[:at] + byte + text[at:], "")

    utf16 = st.sampled_from(["utf-16", "utf-16-le", "utf-32"]).map(
        lambda codec: Malformed("not utf-8", text.decode().encode(codec), "")
    )
    return st.one_of(st.builds(insert, st.integers(0, 10**6), st.sampled_from(NOT_UTF8)), utf16)


def wrong_shapes() -> st.SearchStrategy[Malformed]:
    """A file that is not a mapping of blocks at all, or is empty."""
    whole = st.sampled_from(
        [b"", b"   \n", b"# only a comment\n", b"---\n", b"[]\n", b"[1, 2]\n", b"42\n"]
    ) | st.sampled_from([b"just some text\n", b"null\n", b"- fixed: {}\n"])
    return whole.map(lambda data: Malformed("wrong shape", data, ""))


KINDS = (
    "wrong type",
    "unknown key",
    "empty grid",
    "huge grid",
    "bad sigma",
    "yaml syntax",
    "not utf-8",
    "wrong shape",
)


def malformed_sweeps() -> st.SearchStrategy[Malformed]:
    """Any of the malformed sweep files above."""
    return st.one_of(
        wrong_types(),
        unknown_keys(),
        non_string_keys(),
        empty_grids(),
        huge_grids(),
        bad_sigmas(),
        broken_yaml(),
        not_utf8(),
        wrong_shapes(),
    )
