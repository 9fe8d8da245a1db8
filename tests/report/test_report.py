"""The report of a real (tiny) sweep: it builds, parses, has every image, and escapes names."""

from __future__ import annotations

import base64
import math
import re
import sqlite3
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from walkingnoise.analysis.noisy_machines import ETA_ZERO_NOTE, weight_noise_accuracy
from walkingnoise.analysis.tables import AMPLITUDE_NOTE
from walkingnoise.experiment import Experiment
from walkingnoise.report import write_report
from walkingnoise.report.html import (
    ACCURACY_MARKS,
    ERROR_NOTATION,
    FIGURE_MANIFEST,
    PRESERVATION_MARKS,
    SITE_ACCURACY_MARKS,
    SITE_MU_MARKS,
    _sigmas_text,
)
from walkingnoise.sweep import Store, StoreError, load_results, parse_sweep, run_sweep

from .conftest import IMG_ERROR, SCRIPT_BLOCK, SCRIPT_NAME

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """Collects image sources, tag names and <pre> texts; checks tags are balanced."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.pre: list[str] = []
        self.text: list[str] = []
        self._in_pre = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)
        self._in_pre = self._in_pre or tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_pre:
            self.pre.append(data)


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == []
    return page


@pytest.fixture(scope="module")
def embedded(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(tiny_store, tmp_path_factory.mktemp("report") / "out")


@pytest.mark.slow  # a real sweep (shared), then its figures
def test_report_of_a_real_sweep_parses_with_every_image_embedded(embedded: Path) -> None:
    assert embedded.name == "index.html"
    page = _parse(embedded)
    assert len(page.images) >= 4
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    out = embedded.parent
    for name in ("midpoints", "sites", "preservation"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        assert (out / "tables" / f"{name}.md").read_text().startswith("|")
    assert sorted(p.suffix for p in (out / "figures").iterdir()).count(".svg") == len(page.images)
    text = " ".join(page.text)
    assert "Midpoint noise levels" in text
    assert "walking:10" in text
    assert "layers.10:Linear" in text  # site names from the model
    assert "clean accuracy (smallest σ)" in text  # what the preservation is relative to
    assert "clean test accuracy of the models of the curve's smallest σ" in text
    assert any("logspace" in pre for pre in page.pre)  # the sweep file
    assert ACCURACY_MARKS in text  # what the points, lines and diamonds of Fig. 1 are
    assert ERROR_NOTATION in text  # what ``μ ×/÷ f`` and ``μ (unconstrained)`` mean
    for marks in (SITE_MU_MARKS, SITE_ACCURACY_MARKS, PRESERVATION_MARKS):  # Figs. 2, 3 and 5
        assert marks in text
    source = embedded.read_text(encoding="utf-8")
    assert '<a href="tables/midpoints.csv">midpoints.csv</a>' in source  # linked, not named
    assert "[sites.md](tables/sites.md)" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow  # a real sweep (shared), then its figures
def test_linked_figures_exist_beside_the_page(tiny_store: Path, tmp_path: Path) -> None:
    index = write_report(tiny_store, tmp_path, embed=False, site_names=False)
    page = _parse(index)
    assert page.images
    for src in page.images:
        assert src.startswith("figures/")
        assert not src.startswith("/")
        assert (tmp_path / src).read_bytes()[:8] == PNG


@pytest.mark.slow  # a real sweep (shared), then its figures
def test_names_from_the_store_are_escaped(embedded: Path) -> None:
    html = embedded.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;block&#x27;)&lt;/script&gt;" in html  # block names
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in html  # the sweep's name
    page = _parse(embedded)
    assert "script" not in page.tags
    assert "x" not in page.images  # the failed experiment's error text stays text
    text = "".join(page.text)
    assert SCRIPT_BLOCK in text
    assert SCRIPT_NAME in text
    assert IMG_ERROR in text
    markdown = (embedded.parent / "report.md").read_text(encoding="utf-8")
    outside_code = re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    assert "<script" not in outside_code
    assert "&lt;script&gt;" in outside_code
    assert f'name: "tiny {SCRIPT_NAME}"' in markdown  # the sweep file, verbatim in a code block


@pytest.mark.slow  # a real sweep (shared), then its figures
def test_rerunning_regenerates_everything_from_the_store(tiny_store: Path, tmp_path: Path) -> None:
    first = write_report(tiny_store, tmp_path, site_names=False).read_text(encoding="utf-8")
    figures = sorted(p.name for p in (tmp_path / "figures").glob("[!.]*"))
    (tmp_path / "figures" / figures[0]).unlink()
    (tmp_path / "tables" / "midpoints.csv").unlink()
    # a figure an earlier report wrote that this one does not, and a file of the user's
    (tmp_path / "figures" / "99-stale.png").write_bytes(PNG)
    with (tmp_path / "figures" / FIGURE_MANIFEST).open("a", encoding="utf-8") as manifest:
        manifest.write("99-stale.png\n")
    (tmp_path / "figures" / "my-plot.png").write_bytes(PNG)
    second = write_report(tiny_store, tmp_path, site_names=False).read_text(encoding="utf-8")
    assert second == first
    left = sorted(p.name for p in (tmp_path / "figures").glob("[!.]*"))
    assert left == sorted([*figures, "my-plot.png"])
    assert (tmp_path / "tables" / "midpoints.csv").is_file()


def test_a_missing_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        write_report(tmp_path / "nothing.sqlite", tmp_path / "out")
    assert not (tmp_path / "nothing.sqlite").exists()


def test_a_store_without_results_gives_a_short_report(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.sqlite") as store:
        store.add([(Experiment(sigma=1.0), "pending-only")])
    index = write_report(tmp_path / "empty.sqlite", tmp_path / "out", site_names=False)
    page = _parse(index)
    assert page.images == []
    text = " ".join(page.text)
    assert "1 experiments: 1 pending" in text
    assert "No finished experiments" in text
    assert "no curve to fit: no finished experiment with a scalar σ" in text
    assert "every fit converged" not in text


NOISY_MACHINES_SWEEP = """
name: noisy-machines
fixed:
  dataset: digits
  model: mlp
  noise: none
  eval_repeats: 2
  seed: 0
  recipe: {epochs: 1}
grid:
  weight_noise: {type: choice, options: [0.0, 0.1]}
inference_only:
  fixed: {train_noise: false}
noise_injection:
  fixed: {train_noise: true}
"""


def test_a_weight_noise_study_gets_the_noisy_machines_table(tmp_path: Path) -> None:
    """A store of weight noise alone has no σ to fit; the report shows its table over η."""
    store = tmp_path / "nm.sqlite"
    run_sweep(parse_sweep(NOISY_MACHINES_SWEEP, "nm.yaml"), store, progress=False)
    index = write_report(store, tmp_path / "out", site_names=False)
    text = " ".join(_parse(index).text)
    assert "Noisy Machines: accuracy vs weight noise η" in text
    assert ETA_ZERO_NOTE in text
    assert "Midpoint noise levels" not in text  # nothing to fit is no section, no warning
    assert len(_parse(index).images) == 1  # accuracy vs η, one line per training
    assert any((tmp_path / "out" / "figures").glob("*-noisy-machines-*.png"))
    assert "no curve to fit" not in text
    assert "Midpoint fits: the logistic" not in text
    table = pd.read_csv(tmp_path / "out" / "tables" / "noisy_machines.csv")
    expected = weight_noise_accuracy(load_results(store))
    numbers = ["training", "weight_noise", "mean", "std", "seeds", "clean_mean"]
    pd.testing.assert_frame_equal(table[numbers], expected[numbers], check_dtype=False)
    shown = (tmp_path / "out" / "tables" / "noisy_machines.md").read_text(encoding="utf-8")
    assert "| inference-only (%) | noise injection (%) |" in shown  # the file names its unit
    row = table[(table["weight_noise"] == 0.1) & (table["training"] == "inference-only")]
    assert f"{100 * row['mean'].iloc[0]:.2f}" in text


def test_the_mu_of_mixed_noise_with_a_ratio_is_said_to_be_an_amplitude(
    synthetic_store: Path, embedded: Path, tmp_path: Path
) -> None:
    """μ of a mixed-noise curve over an amplitude A (σ_add = A·r) is in units of A, not σ."""
    results = load_results(synthetic_store)
    chosen = results[(results["noise"] == "mixed") | results["placement"].str.startswith("global")]
    index = write_report(
        synthetic_store, tmp_path / "out", site_names=False, experiments=set(chosen["hash"])
    )
    text = " ".join(_parse(index).text)
    assert AMPLITUDE_NOTE in text
    shown = (tmp_path / "out" / "tables" / "midpoints.md").read_text(encoding="utf-8")
    assert "| μ | μ is |" in shown.splitlines()[0]
    assert shown.count("| amplitude A |") == 6
    assert shown.count("| σ |") == 4  # the global curves
    assert AMPLITUDE_NOTE not in (embedded.parent / "report.md").read_text(encoding="utf-8")


GPU = "cuda:0 (NVIDIA H100 80GB HBM3)"
SECOND_GPU = "cuda:1 (NVIDIA H100 80GB HBM3)"


def test_the_summary_says_where_results_computed_and_warns_of_a_mix(
    tiny_store: Path, tmp_path: Path
) -> None:
    """A store computed on one device says so; one that mixes CPU and GPU results (noise drawn
    by other generators) gets a warning that names both kinds; two GPUs of one model do not."""
    one = " ".join(_parse(write_report(tiny_store, tmp_path / "one", site_names=False)).text)
    assert "computed on: cpu 20" in one
    assert "kinds of device" not in one
    mixed = tmp_path / "mixed.sqlite"
    with closing(sqlite3.connect(tiny_store)) as source, closing(sqlite3.connect(mixed)) as db:
        source.backup(db)
        with db:
            db.execute(
                "UPDATE experiments SET device = ? WHERE hash IN "
                "(SELECT hash FROM experiments WHERE status = 'done' LIMIT 8)",
                (GPU,),
            )
    text = " ".join(_parse(write_report(mixed, tmp_path / "mixed", site_names=False)).text)
    assert f"computed on: cpu 12, {GPU} 8" in text
    assert "computed on 2 kinds of device (cpu, NVIDIA H100 80GB HBM3)" in text
    with closing(sqlite3.connect(mixed)) as db, db:  # two GPUs of one model: one kind
        db.execute("UPDATE experiments SET device = ? WHERE device = 'cpu'", (SECOND_GPU,))
    text = " ".join(_parse(write_report(mixed, tmp_path / "gpus", site_names=False)).text)
    assert f"computed on: {SECOND_GPU} 12, {GPU} 8" in text
    assert "kinds of device" not in text


def test_the_plateau_hint_is_for_poor_fits_of_scaling_noise_without_batchnorm() -> None:
    from walkingnoise.report.html import _plateau_suspects

    fits = pd.DataFrame(
        {
            "noise": ["additive", "multiplicative", "multiplicative", "mixed"],
            "batchnorm": [False, True, False, False],
            "poor_fit": [True, True, True, False],
        }
    )
    assert _plateau_suspects(fits).tolist() == [False, False, True, False]


@pytest.mark.parametrize(
    ("label", "slug"),
    [
        ("digits · mlp · BN · additive", "digits-mlp-bn-additive"),
        (
            "digits · mlp · BN · multiplicative · noisy training · gradient=through_noise",
            "digits-mlp-bn-multiplicative-noisy-training-gradient-through",  # whole words
        ),
        ("a" * 70, "a" * 60),  # one long word is cut
        ("· ·", "all"),
    ],
)
def test_figure_file_names_are_short_and_cut_between_words(label: str, slug: str) -> None:
    from walkingnoise.report.html import _slug

    assert _slug(label) == slug


def test_a_preservation_figure_names_the_sigma_it_compares_at() -> None:
    assert _sigmas_text(pd.Series([1e6, 1e6])) == "σ = 1e+06"
    assert _sigmas_text(pd.Series([100.0, 1e6, math.nan])) == "σ = 100 … 1e+06"
    assert _sigmas_text(pd.Series([], dtype=float)) == "the largest σ"


def test_the_per_site_accuracy_figure_says_its_sigma_is_the_measured_one_nearest_the_median(
    synthetic_store: Path, tmp_path: Path
) -> None:
    """Fig. 3 is drawn at a measured σ, the one nearest the family's median μ; the caption
    gives both, so the σ is not read as the median μ itself."""
    out = tmp_path / "report"
    write_report(synthetic_store, out)
    sites = pd.read_csv(out / "tables" / "sites.csv")
    family = sites[~sites["batchnorm"] & (sites["noise"] == "additive")]
    kept = family.loc[family["mu_in_range"], "mu"].astype(float)
    median = float(np.exp(np.log(kept).median()))
    caption = re.search(
        r"Accuracy per site at σ = (\S+) \(([^)]*)\), digits · mlp · no BN · additive",
        (out / "report.md").read_text(encoding="utf-8"),
    )
    assert caption is not None
    assert float(caption.group(1)) != pytest.approx(median, rel=0.01)  # a grid σ, not μ
    assert caption.group(2).startswith(f"the measured σ nearest {median:.3g}, the median μ")


def test_a_report_of_an_unfinished_store_warns_that_its_curves_leave_experiments_out(
    tiny_store: Path, tmp_path: Path
) -> None:
    """Experiments still pending or running are in no curve: the warnings say so, rather than
    'every fit converged' over curves that lack their larger σ."""
    unfinished = tmp_path / "unfinished.sqlite"
    with closing(sqlite3.connect(tiny_store)) as source, closing(sqlite3.connect(unfinished)) as db:
        source.backup(db)
        with db:
            done = "SELECT hash FROM experiments WHERE status = 'done' ORDER BY hash LIMIT ?"
            db.execute(f"UPDATE experiments SET status = 'pending' WHERE hash IN ({done})", (3,))
            db.execute(f"UPDATE experiments SET status = 'running' WHERE hash IN ({done})", (2,))
    index = write_report(unfinished, tmp_path / "out", site_names=False)
    text = " ".join(_parse(index).text)
    assert "5 experiments not finished (3 pending, 2 running)" in text
    assert "the curves, fits and figures below leave them out" in text
    whole = " ".join(_parse(write_report(tiny_store, tmp_path / "whole", site_names=False)).text)
    assert "not finished" not in whole
