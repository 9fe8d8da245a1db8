"""The README's Python examples run as written, each in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SRC = README.parent / "src"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{cwd}"}
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_readme_has_its_four_python_examples() -> None:
    blocks = _python_blocks()
    assert len(blocks) == 4
    assert "write_report(" in blocks[2]
    assert blocks[3].startswith("# mymodels.py")


@pytest.mark.parametrize("index", [0, 1], ids=["from-python", "a-study"])
def test_a_python_example_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_python_blocks()[index], encoding="utf-8")
    done = _run([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr
    if index == 1:
        lines = done.stdout.strip().splitlines()
        assert lines[-3].split()[-2:] == ["mu", "mu_err"]
        assert "layers.1:Linear" in lines[-2]
        assert (tmp_path / "walking.sqlite").is_file()
        script.write_text(_python_blocks()[2], encoding="utf-8")  # its figures and report
        done = _run([str(script)], tmp_path)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "figures" / "accuracy.png").is_file()
        assert (tmp_path / "figures" / "site-mu.png").is_file()
        assert (tmp_path / "walking-report" / "index.html").is_file()


def test_the_own_model_example_gives_its_sites(tmp_path: Path) -> None:
    (tmp_path / "mymodels.py").write_text(_python_blocks()[3], encoding="utf-8")
    done = _run(["-m", "walkingnoise", "--import", "mymodels", "sites", "mynet"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Linear" in done.stdout
    assert "BatchNorm1d" in done.stdout
