"""A store written by someone else: its strings are shown as text, and nothing in it runs.

The store is tampered with the way a shared file can be: settings in the experiments' JSON,
block and sweep names, error messages and the kept sweep file hold markup, TeX that matplotlib
would try to typeset, and YAML tags that would call Python. ``walking-noise report`` and ``fit``
must show all of it as text (HTML-escaped, Markdown-escaped, plain in figures) and run nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.cli import main
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store
from walkingnoise.training.recipe import Recipe

SCRIPT = "<script>alert('x')</script>"
ATTRIBUTE = '"><img src=x onerror="alert(1)">'
TEX = r"$\frac{1}{$ %s _^"
HOSTILE = {"dataset": f"digits{SCRIPT}", "model": f"mlp{ATTRIBUTE}{TEX}"}


def _marker_yaml(marker: Path) -> str:
    return (
        f"name: {SCRIPT}\n"
        f"x: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').close()\"]\n"
        f"</pre>{SCRIPT}<pre>\n"
    )


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a store whose strings are hostile, the file its kept sweep text would create)."""
    folder = tmp_path_factory.mktemp("tampered")
    path = folder / "tampered.sqlite"
    marker = folder / "ran"
    sigmas = np.logspace(-2, 2, 7)
    experiments = [
        Experiment(placement=f"walking:{site}", sigma=float(s), seed=seed, recipe=Recipe(epochs=1))
        for site in (0, 1)
        for s in sigmas
        for seed in (0, 1)
    ]
    with Store(path) as store:
        store.add((e, f"block {SCRIPT} {TEX}") for e in experiments)
        store.claim([e.content_hash() for e in experiments])
        for i, e in enumerate(experiments):
            accuracy = 0.1 + 0.8 / (1 + (float(e.sigma) / 1.0) ** 2) + 0.01 * (i % 3)
            if i == 5:
                store.fail(e.content_hash(), f"Traceback …\nValueError: {ATTRIBUTE}{SCRIPT}\n")
                continue
            store.finish(
                e.content_hash(),
                metrics={
                    "chance_accuracy": 0.1,
                    "clean_test_accuracy": 0.9,
                    "noisy_test_accuracy": accuracy,
                    "noisy_test_accuracy_std": 0.01,
                },
                history=[],
                weights={f"layers.1{SCRIPT}": {"mean_abs": 0.1}},
                timings={"evaluate": 0.0},
                diverged=False,
                checkpoint=None,
            )
        store.save_sweep(f"sweep {SCRIPT}", _marker_yaml(marker))
    db = sqlite3.connect(path)
    for key, text in db.execute("SELECT hash, config FROM experiments").fetchall():
        config = json.loads(text)
        config["dataset"] = HOSTILE["dataset"]
        config["model"] = HOSTILE["model"]
        db.execute("UPDATE experiments SET config = ? WHERE hash = ?", (json.dumps(config), key))
    db.commit()
    db.close()
    return path, marker


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_report_of_a_tampered_store_shows_its_strings_as_text(
    tampered: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, marker = tampered
    out = tmp_path / "report"
    code = main(["report", str(store), "--out", str(out), "--no-site-names"])
    assert code == 0, capsys.readouterr().err
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "onerror=" not in html.replace("onerror=&quot;", "")
    page = _Tags()
    page.feed(html)
    assert "script" not in page.tags
    assert "onerror" not in page.attributes
    assert len(list((out / "figures").glob("*.svg"))) >= 2  # the strings reached the figures
    text = "".join(page.text)
    shown = (HOSTILE["dataset"], HOSTILE["model"], ATTRIBUTE, f"block {SCRIPT}", f"sweep {SCRIPT}")
    for value in (*shown, f"</pre>{SCRIPT}<pre>"):
        assert value in text, value
    assert "!!python/object/apply:builtins.exec" in text  # the kept sweep file, as text

    markdown = (out / "report.md").read_text(encoding="utf-8")
    outside_code = re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    assert "<script" not in outside_code.lower()
    for figure in (out / "figures").glob("*.svg"):
        assert "<script" not in figure.read_text(encoding="utf-8").lower(), figure
    assert not marker.exists()


def test_fit_and_status_of_a_tampered_store_run_nothing(
    tampered: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, marker = tampered
    assert main(["fit", str(store), "--no-site-names"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 curves fitted" in out
    assert main(["status", str(store)]) == 0
    assert "failed   1" in capsys.readouterr().out
    assert not marker.exists()
