"""Sweep files: YAML studies of fixed values, grid axes and named sub-blocks.

The shape is SEML's. A block has ``fixed`` values, ``grid`` axes and any number of named
sub-blocks, which add (and override) their own. The sweep is the union, over the leaf blocks, of
the Cartesian product of the grid axes. Keys are experiment fields; nested fields are written as
mappings in ``fixed`` (``recipe: {epochs: 5}``) or dotted in ``grid`` (``recipe.epochs``).

Grid axes::

    {type: choice, options: [a, b, c]}
    {type: range, min: 0, max: 10, step: 2}       # 0, 2, 4, 6, 8 (max excluded)
    {type: linspace, min: 0, max: 2, num: 21}     # both ends included
    {type: logspace, min: -2, max: 2, num: 9}     # 10**min … 10**max, exponents as in numpy
    {type: adaptive, min: -2, max: 10}            # σ only: refined around each midpoint

``placement: walking:*`` stands for one walking placement per noise site of the model.
``sigma_mul`` and ``sigma_add`` (fixed or grid) together give mixed noise its σ pair
(σ_mul, σ_add), so a σ_mul × σ_add map is two grid axes.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from walkingnoise._numbers import no_bool
from walkingnoise.data.errors import DatasetFormatError
from walkingnoise.experiment import Experiment

#: A sweep with more experiments than this needs an explicit confirmation (``--yes``).
DEFAULT_MAX_EXPERIMENTS = 20_000
WALKING_ALL = "walking:*"
SiteCount = Callable[[Experiment], int]
_TOP_LEVEL_META = ("name", "description")
_SIGMA_PAIR = ("sigma_mul", "sigma_add")


class SweepError(ValueError):
    """A sweep file that cannot be used; the message is one line and names the YAML path."""


class SweepTooLargeError(SweepError):
    """The sweep would create more experiments than allowed without confirmation."""


#: The size of an axis whose count overflows a float: more than any limit.
HUGE = 2**63


class _Axis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_bools(cls, data: Any) -> Any:
        """An axis's parameters are numbers: ``max: true`` is no 1 (a choice may list bools)."""
        if isinstance(data, Mapping):
            for key, value in data.items():
                if key in cls.model_fields and key not in ("type", "options"):
                    try:  # (an unknown key gets its own error)
                        no_bool(value)
                    except ValueError as error:
                        raise ValueError(f"{key}: {error}") from None
        return data

    def values(self) -> list[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def size(self) -> int:  # pragma: no cover - overridden
        """How many values the axis has, without building them (a huge grid stays cheap)."""
        raise NotImplementedError


class ChoiceAxis(_Axis):
    """An explicit list of values."""

    type: Literal["choice"]
    options: list[Any] = Field(min_length=1)

    def values(self) -> list[Any]:
        """The options, in order."""
        return list(self.options)

    def size(self) -> int:
        """The number of options."""
        return len(self.options)


def _check_finite(axis: _Axis, *names: str) -> None:
    """Bounds and steps must be finite numbers (the error names the axis)."""
    for name in names:
        if not math.isfinite(getattr(axis, name)):
            raise ValueError(f"{name} must be finite")


#: Largest |exponent| of a log-spaced axis: noise levels are float32 numbers, which hold
#: 10**±38 (10**39 is infinite, 10**-46 zero).
MAX_EXPONENT = 38


def _check_exponents(axis: _Axis) -> None:
    """``min`` and ``max`` of a log-spaced axis are exponents of 10 that the float32 noise
    levels hold."""
    _check_finite(axis, "min", "max")
    for name in ("min", "max"):
        value = getattr(axis, name)
        if abs(value) > MAX_EXPONENT:
            raise ValueError(
                f"{name} is an exponent of 10: {value:g} gives 10^{value:g}, beyond the float32 "
                f"noise levels (give -{MAX_EXPONENT} … {MAX_EXPONENT})"
            )


class RangeAxis(_Axis):
    """``min, min + step, …`` below ``max`` (integers stay integers)."""

    type: Literal["range"]
    min: float
    max: float
    step: float = 1

    @pydantic.model_validator(mode="after")
    def _check(self) -> RangeAxis:
        _check_finite(self, "min", "max", "step")
        if self.step == 0:
            raise ValueError("step must not be 0")
        return self

    def values(self) -> list[Any]:
        """min, min + step, … up to but without max, as ``numpy.arange``, but computed as
        min + i·step rounded to 12 significant digits, and with max left out also where
        rounding put the last step a hair below it: ``0.1 … 0.3 step 0.1`` is [0.1, 0.2], and
        its values equal the same numbers written out."""
        count = self.size()
        if all(float(v).is_integer() for v in (self.min, self.step)):
            return [int(self.min + i * self.step) for i in range(count)]
        return [_rounded(self.min + i * self.step) for i in range(count)]

    def size(self) -> int:
        """How many values :meth:`values` gives."""
        steps = (self.max - self.min) / self.step
        if steps <= 0:
            return 0
        if not math.isfinite(steps):
            return HUGE
        nearest = round(steps)
        return nearest if math.isclose(steps, nearest, rel_tol=1e-9) else math.ceil(steps)


def _rounded(value: float) -> float:
    """``value`` to 12 significant digits: 1.2000000000000002 → 1.2."""
    return float(f"{value:.12g}")


class LinspaceAxis(_Axis):
    """``num`` evenly spaced values from ``min`` to ``max`` inclusive."""

    type: Literal["linspace"]
    min: float
    max: float
    num: int = Field(ge=1)

    @pydantic.model_validator(mode="after")
    def _check(self) -> LinspaceAxis:
        _check_finite(self, "min", "max")
        return self

    def values(self) -> list[Any]:
        """The values of ``numpy.linspace(min, max, num)``."""
        return [float(v) for v in np.linspace(self.min, self.max, self.num)]

    def size(self) -> int:
        """``num``."""
        return self.num


class LogspaceAxis(_Axis):
    """``num`` log-spaced values from ``10**min`` to ``10**max`` inclusive."""

    type: Literal["logspace"]
    min: float
    max: float
    num: int = Field(ge=1)

    @pydantic.model_validator(mode="after")
    def _check(self) -> LogspaceAxis:
        _check_exponents(self)
        return self

    def values(self) -> list[Any]:
        """The values of ``numpy.logspace(min, max, num)``."""
        return [float(v) for v in np.logspace(self.min, self.max, self.num)]

    def size(self) -> int:
        """``num``."""
        return self.num


class AdaptiveAxis(_Axis):
    """σ chosen as the sweep runs.

    First ``initial`` log-spaced values from ``10**min`` to ``10**max``; then, round by round,
    up to ``per_round`` more around each curve's midpoint, until the standard error of
    log10 μ is at most ``tolerance`` or ``max_points`` σ are measured. Only for ``sigma``.
    """

    type: Literal["adaptive"]
    min: float
    max: float
    initial: int = Field(default=5, ge=3)
    max_points: int = Field(default=15, ge=3)
    per_round: int = Field(default=3, ge=1)
    tolerance: float = Field(default=0.05, gt=0)

    @pydantic.model_validator(mode="after")
    def _check(self) -> AdaptiveAxis:
        _check_exponents(self)
        if self.max <= self.min:
            raise ValueError("max must be larger than min")
        if self.max_points < self.initial:
            raise ValueError("max_points must be at least initial")
        return self

    def values(self) -> list[Any]:
        """The first round: ``initial`` log-spaced σ."""
        return [float(v) for v in np.logspace(self.min, self.max, self.initial)]

    def size(self) -> int:
        """``initial`` (the first round)."""
        return self.initial


AnyAxis = ChoiceAxis | RangeAxis | LinspaceAxis | LogspaceAxis | AdaptiveAxis
Axis = Annotated[AnyAxis, Field(discriminator="type")]
_AXIS = pydantic.TypeAdapter(Axis)


@dataclass
class Block:
    """One block of a sweep file: its own fixed values and axes, and its sub-blocks.

    ``fixed`` and ``grid`` map a dotted experiment field to (value or axis, YAML path).
    """

    path: str
    fixed: dict[str, tuple[Any, str]] = field(default_factory=dict)
    grid: dict[str, tuple[AnyAxis, str]] = field(default_factory=dict)
    children: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file."""

    name: str
    root: Block
    source: str = "<sweep>"
    text: str = ""

    def leaves(self) -> Iterator[tuple[Block, ...]]:
        """Every leaf block with its ancestors, root first."""

        def walk(block: Block, chain: tuple[Block, ...]) -> Iterator[tuple[Block, ...]]:
            chain = (*chain, block)
            if not block.children:
                yield chain
            for child in block.children:
                yield from walk(child, chain)

        yield from walk(self.root, ())

    def adaptive_axes(self) -> dict[str, AdaptiveAxis]:
        """Leaf block path → its adaptive σ axis, for the leaves that have one."""
        axes = {}
        for chain in self.leaves():
            _, grid = _merged(chain)
            axis = grid.get("sigma", (None, ""))[0]
            if isinstance(axis, AdaptiveAxis):
                axes[chain[-1].path or "root"] = axis
        return axes


@dataclass(frozen=True)
class SweepEntry:
    """One experiment of a sweep and the block it came from."""

    experiment: Experiment
    block: str


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_key(key: Any, path: str, source: str) -> str:
    """A key of the mapping at ``path``: a string with no empty part between dots."""
    if not isinstance(key, str):
        raise SweepError(f"{path or source}: key {key!r} is not a string; quote it")
    if not key.strip() or any(not part.strip() for part in key.split(".")):
        raise SweepError(f"{path or source}: key {key!r} is empty or has an empty dotted part")
    return key


def _flatten(
    value: Mapping[str, Any], prefix: str, path: str, source: str
) -> dict[str, tuple[Any, str]]:
    flat: dict[str, tuple[Any, str]] = {}
    for key, item in value.items():
        _check_key(key, path, source)
        dotted, where = _join(prefix, key), _join(path, key)
        if isinstance(item, Mapping):
            flat |= _flatten(item, dotted, where, source)
        else:
            flat[dotted] = (item, where)
    return flat


def _parse_block(raw: Any, path: str, source: str, *, top: bool = False) -> Block:
    if not isinstance(raw, Mapping):
        kind = type(raw).__name__
        hint = ""
        if path and "." not in path and path in Experiment.model_fields:
            hint = f" ({path} is an experiment setting: put it under fixed: or grid:)"
        raise SweepError(
            f"{path or source}: a block must be a mapping of fixed, grid and sub-blocks, "
            f"not {kind}{hint}"
        )
    block = Block(path=path)
    for key, value in raw.items():
        where = _join(path, _check_key(key, path, source))
        if top and key in _TOP_LEVEL_META:
            continue
        if key == "fixed":
            if not isinstance(value, Mapping):
                raise SweepError(f"{where}: must be a mapping of field: value")
            block.fixed = _flatten(value, "", where, source)
        elif key == "grid":
            if not isinstance(value, Mapping):
                raise SweepError(f"{where}: must be a mapping of field: axis")
            for name, axis in value.items():
                at = _join(where, _check_key(name, where, source))
                if isinstance(axis, Mapping) and axis.get("type") == "adaptive" and name != "sigma":
                    raise SweepError(f"{at}: only sigma can be adaptive")
                block.grid[name] = (_parse_axis(axis, at), at)
        else:
            _check_block_name(key, value, where)
            block.children.append(_parse_block(value, where, source))
    _check_fixed_and_grid(block)
    return block


def _check_fixed_and_grid(block: Block) -> None:
    """A field is either fixed or a grid axis in one block, never both (one would be lost)."""
    for name, (_, fixed_at) in block.fixed.items():
        for axis, (_, grid_at) in block.grid.items():
            if name == axis or name.startswith(axis + ".") or axis.startswith(name + "."):
                raise SweepError(f"{fixed_at}: also set by the grid axis {grid_at}; keep one")


def _check_block_name(key: str, value: Any, where: str) -> None:
    """A sub-block named like a misspelt ``fixed``/``grid``, holding no fixed or grid of its
    own, is reported as the typo it is."""
    if not isinstance(value, Mapping) or set(value) & {"fixed", "grid"}:
        return
    close = difflib.get_close_matches(key, ("fixed", "grid"), n=1, cutoff=0.6)
    if close:
        raise SweepError(f"{where}: unknown key; did you mean {close[0]!r}?")


def _parse_axis(raw: Any, path: str) -> AnyAxis:
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise SweepError(
            f"{path}: a grid axis is a mapping with type choice, range, linspace or logspace"
        )
    try:
        axis = _AXIS.validate_python(dict(raw))
    except pydantic.ValidationError as error:
        raise SweepError(_axis_error(error, path)) from None
    if axis.size() == 0:
        raise SweepError(f"{path}: the axis has no values")
    return axis


def _axis_error(error: pydantic.ValidationError, path: str) -> str:
    errors = error.errors()
    # a misspelt key is both unknown and missing: naming the unknown one helps most
    item = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    parts = [str(p) for p in item["loc"]]
    kind = parts.pop(0) if parts and parts[0] in _AXIS_TYPES else None
    where = _join(path, ".".join(parts)) if parts else path
    if item["type"] == "union_tag_invalid":
        tag = item.get("ctx", {}).get("tag", "")
        return f"{where}.type: unknown axis type {tag!r}; choose {', '.join(_AXIS_TYPES)}"
    if item["type"] == "extra_forbidden" and kind is not None:
        known = ", ".join(_AXIS_TYPES[kind].model_fields)
        article = "an" if kind[0] in "aeiou" else "a"
        return f"{where}: unknown key of {article} {kind} axis; known: {known}"
    return f"{where}: {item['msg'].removeprefix('Value error, ')}"


#: Each axis type by the name a sweep file gives it.
_AXIS_TYPES: dict[str, type[_Axis]] = {
    "choice": ChoiceAxis,
    "range": RangeAxis,
    "linspace": LinspaceAxis,
    "logspace": LogspaceAxis,
    "adaptive": AdaptiveAxis,
}


class _SweepLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error: the safe
    loader keeps the last value, so ``model: mlp`` then ``model: lenet5`` would run lenet5.
    Checked as each mapping is read, before merge keys (``<<: *base``) add theirs, which the
    mapping's own keys may override."""

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in first:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the key {key_node.value!r} is given twice (first at line {first[key]})",
                    key_node.start_mark,
                )
            first[key] = line
        return node


def parse_sweep(text: str | bytes, source: str = "<sweep>") -> SweepSpec:
    """Parse the YAML text of a sweep file (safe loader) into a ``SweepSpec``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SweepError(
                f"{source}: not UTF-8 text (byte 0x{text[error.start]:02x} at offset {error.start})"
            ) from None
    try:
        raw = yaml.load(text, Loader=_SweepLoader)  # a SafeLoader: builds no Python objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SweepError(f"{source}: YAML syntax error{where}: {problem}") from None
    except RecursionError:  # thousands of nested [ or {: no sweep file is built like that
        raise SweepError(f"{source}: nested too deeply to be a sweep file") from None
    if raw is None:
        raise SweepError(f"{source}: the sweep file is empty")
    root = _parse_block(raw, "", source, top=True)
    name = raw.get("name", Path(source).stem) if isinstance(raw, Mapping) else "sweep"
    if not isinstance(name, str | int | float) or isinstance(name, bool) or not str(name).strip():
        raise SweepError(f"{source}: name: must be text, got {name!r}")
    return SweepSpec(name=str(name), root=root, source=source, text=text)


#: Largest sweep file read (the paper's largest study is a few kilobytes).
MAX_SWEEP_BYTES = 1_000_000


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and parse a sweep file: a regular file of at most :data:`MAX_SWEEP_BYTES` (a pipe
    would hang the read, ``/dev/zero`` fill the memory)."""
    path = Path(path)
    if path.is_dir():
        raise SweepError(f"{path}: is a directory, not a sweep file")
    if path.exists() and not path.is_file():
        raise SweepError(f"{path}: is not a regular file (a pipe or a device?), not a sweep file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SWEEP_BYTES + 1)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    except OSError as error:
        raise SweepError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_SWEEP_BYTES:
        raise SweepError(f"{path}: larger than {MAX_SWEEP_BYTES:,} bytes; not a sweep file")
    return parse_sweep(data, str(path))


def _merged(chain: tuple[Block, ...]) -> tuple[dict[str, tuple[Any, str]], dict[str, tuple]]:
    """Fixed values and axes of a leaf, later blocks overriding earlier ones key by key."""
    fixed: dict[str, tuple[Any, str]] = {}
    grid: dict[str, tuple] = {}
    for block in chain:
        for key in block.fixed:
            grid.pop(key, None)
        for key in block.grid:
            fixed.pop(key, None)
        fixed |= block.fixed
        grid |= block.grid
    return fixed, grid


def count_experiments(spec: SweepSpec) -> int:
    """Upper bound on the experiments of a sweep, without building them (``walking:*`` as 1)."""
    total = 0
    for chain in spec.leaves():
        _, grid = _merged(chain)
        total += math.prod(axis.size() for axis, _ in grid.values())
    return total


def _unflatten(flat: Mapping[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, last = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SweepError(f"{origins.get(dotted, dotted)}: {part} is not a mapping field")
        node[last] = value
    return nested


def _locate(loc: tuple[Any, ...], origins: Mapping[str, str], leaf: str) -> str:
    """The YAML path of the value behind a pydantic error location. An error of the whole
    experiment (an empty location) is one of σ against the noise and placement: it points at
    sigma where the sweep gives it, else at the block that would give it."""
    dotted = ".".join(str(p) for p in loc if not isinstance(p, int))
    if not dotted:
        return origins.get("sigma", leaf or "fixed")
    for key in (dotted, *(k for k in origins if k.startswith(dotted + "."))):
        if key in origins:
            return origins[key]
    parent = dotted.rsplit(".", 1)[0]
    return origins.get(parent, _join(leaf, "fixed." + dotted) if leaf else "fixed." + dotted)


def _known_fields(parents: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``parents`` inside ``Experiment``."""
    model: type[BaseModel] = Experiment
    for name in parents:
        annotation = model.model_fields[str(name)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


def _pair_sigma(config: dict[str, Any], origins: Mapping[str, str], leaf: str) -> dict[str, Any]:
    """``sigma_mul`` and ``sigma_add`` folded into the ``sigma`` pair of mixed noise."""
    given = [key for key in _SIGMA_PAIR if key in config]
    if not given:
        return config
    if len(given) == 1:
        missing = next(key for key in _SIGMA_PAIR if key not in config)
        known = {*_SIGMA_PAIR, *Experiment.model_fields}
        unknown = [key for key in config if key not in known and "." not in key]
        typo = difflib.get_close_matches(missing, unknown, n=1)
        if typo:  # the pair's other half, misspelt: name the misspelling
            where = origins.get(typo[0], leaf)
            raise SweepError(f"{where}: unknown key; did you mean {missing}?")
        raise SweepError(f"{origins.get(given[0], leaf)}: needs {missing} beside it")
    if "sigma" in config:
        where = origins.get("sigma", leaf)
        raise SweepError(f"{where}: give sigma or sigma_mul/sigma_add, not both")
    if config.get("ratio") is not None:  # it would change only the hashes: one run, two ids
        where = origins.get("ratio", leaf)
        raise SweepError(
            f"{where}: a ratio reads a scalar sigma as an amplitude; with sigma_mul/sigma_add "
            "leave it out"
        )
    folded = {key: value for key, value in config.items() if key not in _SIGMA_PAIR}
    folded["sigma"] = (config["sigma_mul"], config["sigma_add"])
    return folded


def _validate(config: dict[str, Any], origins: Mapping[str, str], leaf: str) -> Experiment:
    if "sigma_mul" in config:
        origins = {**origins, "sigma": origins.get("sigma_mul", leaf)}
    config = _pair_sigma(config, origins, leaf)
    try:
        return Experiment.model_validate(_unflatten(config, origins))
    except pydantic.ValidationError as error:
        item = error.errors()[0]
        where = _locate(tuple(item["loc"]), origins, leaf)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parents = tuple(item["loc"][:-1])
            known = _known_fields(parents) + ([] if parents else list(_SIGMA_PAIR))
            message = f"unknown key; known: {', '.join(known)}"
        raise SweepError(f"{where}: {message}") from None


@dataclass(frozen=True)
class Repeats:
    """Grid points that give an experiment an earlier point of the sweep already gives: they
    count once (e.g. a σ grid under ``noise: none``). ``example`` says which points, in words."""

    count: int = 0
    example: str = ""


def expand(
    spec: SweepSpec,
    *,
    site_count: SiteCount | None = None,
    max_experiments: int | None = DEFAULT_MAX_EXPERIMENTS,
    check_sites: bool = True,
) -> list[SweepEntry]:
    """All distinct experiments of the sweep, in a deterministic order.

    Args:
        site_count: ``(experiment) -> int`` giving the number of noise sites of its model, used to
            expand ``walking:*`` and to reject site indices beyond the model; None skips both.
        max_experiments: refuse (``SweepTooLargeError``) sweeps larger than this; None for no limit.
        check_sites: False asks ``site_count`` only to expand ``walking:*``, and checks no index.
    """
    return expand_counted(
        spec, site_count=site_count, max_experiments=max_experiments, check_sites=check_sites
    )[0]


def expand_counted(
    spec: SweepSpec,
    *,
    site_count: SiteCount | None = None,
    max_experiments: int | None = DEFAULT_MAX_EXPERIMENTS,
    check_sites: bool = True,
) -> tuple[list[SweepEntry], Repeats]:
    """:func:`expand`, and the grid points that repeated an experiment and counted once."""
    bound = count_experiments(spec)
    if max_experiments is not None and bound > max_experiments:
        raise SweepTooLargeError(
            f"{spec.source}: the sweep has {bound} experiments, more than the limit of "
            f"{max_experiments}; check the grid sizes, or confirm with --yes"
        )
    entries: dict[str, SweepEntry] = {}
    points: dict[str, tuple[str, dict[str, Any]]] = {}  # the first grid point of each hash
    repeated, example = 0, ""
    checked = site_count if check_sites else None
    for chain in spec.leaves():
        leaf = chain[-1].path
        fixed, grid = _merged(chain)
        origins = {key: where for key, (_, where) in fixed.items()}
        origins |= {key: where for key, (_, where) in grid.items()}
        keys = list(grid)
        for combination in itertools.product(*(grid[k][0].values() for k in keys)):
            config = {key: value for key, (value, _) in fixed.items()}
            config |= dict(zip(keys, combination, strict=True))
            for experiment in _expand_sites(config, origins, leaf, checked, site_count):
                key = experiment.content_hash()
                if key not in entries:
                    entries[key] = SweepEntry(experiment, leaf or "root")
                    points[key] = (leaf, config)
                    continue
                repeated += 1
                example = example or _repeat_example(points[key], (leaf, config))
            if max_experiments is not None and len(entries) > max_experiments:
                raise SweepTooLargeError(  # walking:* counted 1 above: stop once it is known
                    f"{spec.source}: the sweep has more than {max_experiments} experiments; "
                    "confirm with --yes"
                )
    return list(entries.values()), Repeats(repeated, example)


def _repeat_example(first: tuple[str, dict[str, Any]], again: tuple[str, dict[str, Any]]) -> str:
    """Two grid points that give one experiment, e.g. ``sigma 0.1 and 1.0 (block clean)``."""
    (leaf, config), (other_leaf, other) = first, again
    parts = []
    for key in config | other:
        if config.get(key) != other.get(key):
            parts.append(f"{key} {config.get(key, '(unset)')} and {other.get(key, '(unset)')}")
    if other_leaf == leaf:
        blocks = f"block {leaf or 'root'}"
    else:
        blocks = f"blocks {leaf or 'root'} and {other_leaf or 'root'}"
    return f"{'; '.join(parts) or 'the same settings'} ({blocks})"


def _expand_sites(
    config: dict[str, Any],
    origins: Mapping[str, str],
    leaf: str,
    checked: SiteCount | None,
    site_count: SiteCount | None,
) -> Iterator[Experiment]:
    """The experiment of one grid point, or one per site for ``walking:*``; ``checked`` counts
    the sites that an experiment's site indices are checked against (None: not checked)."""
    if config.get("placement") != WALKING_ALL:
        experiment = _validate(config, origins, leaf)
        if checked is not None:
            n_sites = _count_sites(experiment, checked, origins, leaf)
            _check_sites(experiment, n_sites, origins, leaf)
        yield experiment
        return
    probe = _validate({**config, "placement": "walking:0"}, origins, leaf)
    if site_count is None:
        raise SweepError(f"{origins.get('placement', leaf)}: walking:* needs the model's sites")
    for index in range(_count_sites(probe, site_count, origins, leaf)):
        yield probe.model_copy(update={"placement": f"walking:{index}"})


def _count_sites(
    experiment: Experiment, site_count: SiteCount, origins: Mapping[str, str], leaf: str
) -> int:
    """The model's site count; a model that cannot take the dataset is an error at ``model``.

    A dataset file that cannot be read is not the sweep file's fault: its error, which names
    the file, goes on unchanged.
    """
    try:
        return site_count(experiment)
    except DatasetFormatError:
        raise
    except ValueError as error:
        where = origins.get("model", origins.get("dataset", leaf or "fixed"))
        raise SweepError(f"{where}: {' '.join(str(error).split())}") from None


def _check_sites(
    experiment: Experiment, n_sites: int, origins: Mapping[str, str], leaf: str
) -> None:
    placement = experiment.placement_spec()
    indices = [getattr(placement, "site", None), *list(getattr(placement, "sigmas", {}) or {})]
    for index in indices:
        if index is not None and not 0 <= index < n_sites:
            where = origins.get("placement", leaf)
            raise SweepError(
                f"{where}: site {index} is beyond the {n_sites} noise sites (0..{n_sites - 1}) of "
                f"{experiment.model} (batchnorm={experiment.batchnorm}) on {experiment.dataset}"
            )
