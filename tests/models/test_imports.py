"""Tests for ``--import``: the user's model modules, imported by name."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from walkingnoise.models.imports import IMPORTS_VARIABLE, import_user_modules


@pytest.mark.parametrize("given", ["mymodels.py", "./mymodels.py", "sub/mymodels.py"])
def test_a_file_name_is_refused_with_the_module_name_to_give(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mymodels.py").write_text("VALUE = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    monkeypatch.setenv(IMPORTS_VARIABLE, "")  # restored (unset) after the test
    with pytest.raises(ImportError) as caught:
        import_user_modules([given])
    message = str(caught.value)
    assert message.startswith(f"--import {given}: ")
    assert message.endswith("(give a module name, e.g. --import mymodels, not a file)")


def test_a_module_name_from_the_current_directory_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "walkingnoise_test_usermodule.py").write_text("VALUE = 7\n")
    monkeypatch.delitem(sys.modules, "walkingnoise_test_usermodule", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(IMPORTS_VARIABLE, "")  # restored (unset) after the test
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert import_user_modules(["walkingnoise_test_usermodule"]) == ["walkingnoise_test_usermodule"]
    assert os.environ[IMPORTS_VARIABLE] == "walkingnoise_test_usermodule"


def test_a_module_that_exits_while_imported_is_an_import_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script run as a module (``sys.exit(main())`` at the bottom) would end the command
    with its own status and no message."""
    (tmp_path / "walkingnoise_test_exits.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.delitem(sys.modules, "walkingnoise_test_exits", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(IMPORTS_VARIABLE, "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(ImportError, match=r"^--import walkingnoise_test_exits: the module called "):
        import_user_modules(["walkingnoise_test_exits"])
