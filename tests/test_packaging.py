"""The package's data files are declared, so a wheel (not only an editable install) has them."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import walkingnoise

ROOT = Path(__file__).resolve().parents[1]


def _package_data() -> list[str]:
    """The patterns of ``[tool.setuptools.package-data]`` for walkingnoise (no TOML parser
    before Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(
        r"^\[tool\.setuptools\.package-data\]\s*walkingnoise = (\[.*?\])", text, re.M | re.S
    )
    assert found, "pyproject.toml declares no package data for walkingnoise"
    return ast.literal_eval(found.group(1))


def test_every_data_file_of_the_package_is_package_data() -> None:
    package = Path(walkingnoise.__file__).parent
    if package != ROOT / "src" / "walkingnoise":
        pytest.skip(f"walkingnoise is imported from {package}, not from this checkout's src/")
    declared = {path for pattern in _package_data() for path in package.glob(pattern)}
    data = {
        path
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert data, "the package has data files (the quickstart's sweep at least)"
    assert data <= declared, f"not declared as package data: {sorted(map(str, data - declared))}"


def test_the_examples_in_docstrings_give_what_they_show() -> None:
    """Every ``>>>`` example of the package runs and prints what its docstring says."""
    examples = 0
    for info in pkgutil.walk_packages(walkingnoise.__path__, "walkingnoise."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
        assert result.failed == 0, f"{info.name}: {result.failed} docstring example(s) failed"
        examples += result.attempted
    assert examples >= 8
