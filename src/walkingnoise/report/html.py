"""The study report: every table and figure of a store, as HTML, Markdown and CSV.

:func:`write_report` reads only the store (results and the sweep files run on it) and writes::

    OUT/index.html      the report; figures embedded as base64 PNG (one file to share)
    OUT/report.md       the same tables in Markdown, figures linked from figures/
    OUT/figures/*.png   every figure, also as .svg (for papers)
    OUT/tables/*.csv    every table in full precision, and as .md

Re-running regenerates all of it (figures no longer produced are removed). Every string that
comes from the store — sweep names and texts, block names, settings, error messages — is
escaped with :func:`html.escape`; the page has no scripts and loads nothing from elsewhere.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from walkingnoise import __version__
from walkingnoise._files import check_folder
from walkingnoise._words import counted
from walkingnoise.analysis.curves import (
    accuracy_curves,
    curve_group_columns,
    describe_difference,
    describe_group,
    prepare_results,
)
from walkingnoise.analysis.midpoint import DEFAULT_FLOOR
from walkingnoise.analysis.noisy_machines import (
    ETA_ZERO_NOTE,
    accuracy_vs_eta,
    distillation_settings,
    has_weight_noise,
    shares_clean_models,
    weight_noise_accuracy,
)
from walkingnoise.analysis.tables import (
    AMPLITUDE_NOTE,
    MULTIPLICATIVE_ERROR_FROM,
    UNCONSTRAINED_DECADES,
    AMin,
    SiteNames,
    amplitude_rows,
    dataset_site_names,
    fit_curves,
    format_mu,
    global_table,
    midpoint_cells,
    partial_drops,
    pivot_mu,
    preservation_table,
    result_test_sizes,
    site_table,
    weight_ratio_table,
    with_site_names,
)
from walkingnoise.report import figures
from walkingnoise.report.markdown import (
    cell_text,
    flat_columns,
    markdown_escape,
    markdown_table,
    readable_midpoints,
    write_table,
)
from walkingnoise.sweep.results import devices_text, diverged_note
from walkingnoise.sweep.store import distinct_errors

log = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; height: auto; } .warn { color: #8a4b00; } .note { color: #555; }
"""
#: The lists of the figures and tables a report wrote, in their folders: the next report deletes
#: those it does not write again, and nothing else.
FIGURE_MANIFEST = ".report-figures"
TABLE_MANIFEST = ".report-tables"
#: Walking families (dataset, model, BatchNorm, noise) shown in per-site figures and tables.
_SITE_FAMILY = ("dataset", "model", "batchnorm", "noise")
#: Fig. 5 compares datasets: one figure per (model, BatchNorm, noise).
_PRESERVATION_FAMILY = ("model", "batchnorm", "noise")

#: What the marks of an accuracy-vs-σ figure are, for its caption.
ACCURACY_MARKS = (
    "Points: mean accuracy over seeds ± its standard error; lines: the fitted logistics, "
    "dotted where a fit is flagged; diamonds: μ, half way down its curve."
)
#: What the forms of μ with its error in the tables mean.
ERROR_NOTATION = (
    "μ ± err is μ with the standard error of its fit; μ ×/÷ f, for a fit in log σ whose error "
    f"is a factor f ≥ {MULTIPLICATIVE_ERROR_FROM:g}, spans μ/f … μ·f; μ (unconstrained): an "
    f"error of {UNCONSTRAINED_DECADES:g} decades or more, the data do not locate μ."
)
#: What the marks of a μ-per-site figure (Fig. 2) are, for its caption.
SITE_MU_MARKS = (
    "Error bars: the fit's standard error of μ (for a fit in log σ, 10^(log10 μ ± its error)); "
    "hollow markers: a flagged fit, or a μ the data do not locate (no bar); triangles: curves "
    "that drop only partly (†)."
)
#: What the bars of an accuracy-per-site figure (Fig. 3) are, for its caption.
SITE_ACCURACY_MARKS = (
    "Bars: mean test accuracy over seeds ± its standard error; dashed line: chance."
)
#: What the marks of an accuracy-preservation figure (Fig. 5) are, for its caption.
PRESERVATION_MARKS = (
    "Error bars: the standard errors over seeds of both accuracies, propagated; dashed line: "
    "chance / clean accuracy."
)


def esc(value: object) -> str:
    """HTML-escaped text of any value (quotes included)."""
    return html.escape(str(value), quote=True)


def html_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A plain ``<table>`` of ``frame`` with every header and cell escaped."""
    if index:
        frame = frame.reset_index()
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.copy()
        frame.columns = flat_columns(frame)
    if frame.columns.empty:
        return '<p class="note">(empty)</p>'
    head = "".join(f"<th>{esc(cell_text(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell_text(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class _Report:
    """HTML and Markdown written side by side, plus the figure files produced."""

    out: Path
    embed: bool
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)
    written: set[Path] = field(default_factory=set)
    tables: set[Path] = field(default_factory=set)
    anchors: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0

    def heading(self, title: str, level: int = 2, anchor: str = "") -> None:
        ident = f' id="{esc(anchor)}"' if anchor else ""
        if anchor:
            self.anchors.append((anchor, title))
        self.html.append(f"<h{level}{ident}>{esc(title)}</h{level}>")
        self.md.append(f"\n{'#' * level} {markdown_escape(title)}\n")

    def paragraph(self, text: str, css: str = "") -> None:
        style = f' class="{css}"' if css else ""
        self.html.append(f"<p{style}>{esc(text)}</p>")
        self.md.append(f"{markdown_escape(text)}\n")

    def items(self, lines: Iterable[str], css: str = "") -> None:
        lines = list(lines)
        if not lines:
            return
        style = f' class="{css}"' if css else ""
        self.html.append(f"<ul{style}>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>")
        self.md.append("".join(f"- {markdown_escape(x)}\n" for x in lines))

    def table(self, frame: pd.DataFrame, *, index: bool = False) -> None:
        self.html.append(html_table(frame, index=index))
        self.md.append(markdown_table(frame, index=index))

    def table_files(
        self, frame: pd.DataFrame, folder: Path, name: str, display: pd.DataFrame | None = None
    ) -> None:
        """Write ``folder/NAME.csv`` and ``.md`` (see ``write_table``), remember them, and
        link them on the page (the CSV holds every column, the page a readable few)."""
        files = sorted(write_table(frame, folder, name, display))
        self.tables.update(files)
        links = {file.name: f"{folder.name}/{file.name}" for file in files}
        self.html.append(
            '<p class="note">Table files: '
            + ", ".join(f'<a href="{esc(link)}">{esc(shown)}</a>' for shown, link in links.items())
            + " (the CSV with every column)</p>"
        )
        self.md.append(
            "Table files: "
            + ", ".join(f"[{shown}]({link})" for shown, link in links.items())
            + " (the CSV with every column)\n"
        )

    def pre(self, text: str) -> None:
        self.html.append(f"<pre>{esc(text)}</pre>")
        longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
        fence = "`" * max(3, longest + 1)  # a code block is literal: no escaping needed
        self.md.append(f"{fence}yaml\n{text.rstrip()}\n{fence}\n")

    def figure(self, figure: Any, kind: str, caption: str, group: Mapping[str, Any]) -> None:
        self.count += 1
        name = f"{self.count:02d}-{kind}-{_slug(_label(group))}"
        folder = self.out / "figures"
        paths = figures.save_figure(figure, folder, name)
        self.written.update(paths)
        png = paths[0]
        if self.embed:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            src = f"data:image/png;base64,{data}"
        else:
            src = f"figures/{png.name}"
        self.html.append(
            f'<figure><img src="{esc(src)}" alt="{esc(caption)}">'
            f'<figcaption>{esc(caption)} (<a href="figures/{esc(png.name)}">PNG</a>, '
            f'<a href="figures/{esc(paths[1].name)}">SVG</a>)</figcaption></figure>'
        )
        self.md.append(f"![{markdown_escape(caption)}](figures/{png.name})\n")


def _slug(text: str) -> str:
    """A file-name part made of ``a-z0-9-`` only, at most 60 characters, cut between words."""
    slug = re.sub(r"[^a-z0-9.]+", "-", text.lower()).replace(".", "").strip("-")
    if len(slug) > 60:
        cut = slug[:61].rfind("-")
        slug = slug[: cut if cut > 0 else 60]
    return slug.strip("-") or "all"


def _families(frame: pd.DataFrame, columns: Iterable[str]) -> list[tuple[dict, pd.DataFrame]]:
    columns = [c for c in columns if c in frame]
    if frame.empty:
        return []
    if not columns:
        return [({}, frame)]
    out = []
    for key, part in frame.groupby(columns, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        part = part.copy()
        part.attrs = dict(frame.attrs)
        out.append((dict(zip(columns, key, strict=True)), part))
    return out


def _label(group: Mapping[str, Any]) -> str:
    return describe_group(dict(group)) or "all"


def write_report(
    store: str | Path,
    out_dir: str | Path,
    *,
    a_min: AMin = "auto",
    embed: bool = True,
    site_names: bool | SiteNames = True,
    n_test: Literal["auto"] | int | Mapping[str, int] | None = "auto",
    data_root: str | Path | None = None,
    experiments: Collection[str] | None = None,
    selection: str = "",
    sweeps: Mapping[str, str] | None = None,
) -> Path:
    """Write the HTML/Markdown/CSV report of ``store`` into ``out_dir``; returns ``index.html``.

    Args:
        store: the study's SQLite store (``StoreError``, an ``OSError``, if it does not exist).
        out_dir: folder for the report (created; earlier figures in it are replaced).
        a_min: floor of the midpoint fits: ``chance``, ``free``, ``auto`` or a number.
        embed: put the PNG figures into ``index.html`` as base64; False links ``figures/``.
        site_names: True looks up site names from the models (loading each dataset once);
            False shows indices only; or a ``(dataset, model, batchnorm) -> {index: name}``.
        n_test: test-set size per dataset for the binomial floor of the fit weights; ``auto``
            loads each dataset once to count it, None leaves the floor constant.
        data_root: where the datasets are, for site names and test-set sizes.
        experiments: hashes of the experiments to report on (None: all of the store).
        selection: what chose ``experiments``, in words, for the summary.
        sweeps: name → text of the sweep files to show (None: those the store keeps).
    """
    from walkingnoise.sweep.results import load_results
    from walkingnoise.sweep.store import Store

    with Store(store, read_only=True) as db:
        results = load_results(db, history=False)
        sweeps = db.sweeps() if sweeps is None else sweeps
        counts = db.counts()
        trainings = db.training_count()
        devices = db.devices(None if experiments is None else list(experiments))
    stored = len(results)
    if experiments is not None:
        results = results[results["hash"].isin(set(experiments))].reset_index(drop=True)
        counts = {status: int((results["status"] == status).sum()) for status in counts}
    out = Path(out_dir)
    check_folder(out)  # one line naming it where it cannot be made or written
    names: SiteNames | None
    if callable(site_names):
        names = site_names
    else:
        names = (
            dataset_site_names(None if data_root is None else str(data_root), store)
            if site_names
            else None
        )

    root = None if data_root is None else str(data_root)
    if n_test == "auto":
        n_test = result_test_sizes(results, root)

    report = _Report(out, embed)
    title = f"Walking Noise report: {Path(store).name}"
    report.heading(title, 1)
    again = "" if experiments is None else " with the same selection"
    report.paragraph(
        f"Store {Path(store)}; walkingnoise {__version__}. Everything below is computed from "
        f"the store alone; running `walking-noise report` again{again} regenerates it."
    )
    _summary(report, results, counts, trainings, devices, whole=experiments is not None)
    if experiments is not None:
        report.paragraph(
            f"Selected {len(results)} of the {stored} experiments in the store: "
            f"{selection or 'those given'}."
        )

    curves = accuracy_curves(results)
    fits = fit_curves(curves, a_min=a_min, n_test=n_test)
    if not fits.empty:
        fits = with_site_names(fits, names)
    sites = site_table(fits) if not fits.empty else fits
    preservation = preservation_table(curves)
    tables = out / "tables"

    fitting = not (fits.empty and _weight_noise_only(results))  # a Noisy Machines store: no σ
    _warnings(report, results, fits, a_min, n_test, devices, fitting=fitting)
    if fitting:
        _midpoints(report, fits, sites, tables)
    _walking(report, curves, fits, sites, preservation, names, tables)
    _global(report, curves, fits, tables)
    _mixed(report, curves)
    _noisy_machines(report, results, tables)
    _weights(report, results, tables, names)
    _config(report, results, sweeps)

    _remove_stale(out / "figures", report.written, FIGURE_MANIFEST, (".png", ".svg"))
    _remove_stale(out / "tables", report.tables, TABLE_MANIFEST, (".csv", ".md"))
    links = " · ".join(f'<a href="#{esc(a)}">{esc(text)}</a>' for a, text in report.anchors)
    report.html.insert(2, f"<nav><p>{links}</p></nav>")  # after the title and its note
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(report.html)
        + "\n</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    (out / "report.md").write_text("\n".join(report.md), encoding="utf-8")
    log.info("report written to %s (%d figures)", index, report.count)
    return index


def _remove_stale(
    folder: Path, written: set[Path], listing: str, suffixes: tuple[str, ...]
) -> None:
    """Delete the files an earlier report wrote into ``folder`` that this one did not, and list
    this one's in the ``listing`` file there: files the reports did not write are never touched."""
    manifest = folder / listing
    earlier = manifest.read_text(encoding="utf-8").split() if manifest.is_file() else []
    names = sorted(path.name for path in written)
    for name in set(earlier) - set(names):
        if Path(name).name == name and Path(name).suffix in suffixes:
            (folder / name).unlink(missing_ok=True)
    if names or manifest.is_file():
        manifest.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


# -- sections ---------------------------------------------------------------------------------


def _summary(
    report: _Report,
    results: pd.DataFrame,
    counts: Mapping[str, int],
    trainings: int,
    devices: Mapping[str | None, int],
    *,
    whole: bool = False,
) -> None:
    """Counts per status, the clean trainings (of the ``whole`` store, where the report is of a
    selection) and the devices."""
    report.heading("Summary", anchor="summary")
    total = sum(counts.values())
    report.items(
        [
            f"{total} experiments: "
            + ", ".join(f"{count} {status}" for status, count in counts.items()),
            f"{counted(trainings, 'shared clean training')} stored"
            + (" (whole store)" if whole else ""),
            *([f"computed on: {devices_text(devices)}"] if devices else []),
        ]
    )
    if "block" in results and len(results):
        blocks = results.groupby(["block", "status"], dropna=False).size().unstack(fill_value=0)
        blocks.index.name = "block"
        blocks.columns.name = None
        report.table(blocks, index=True)


def _warnings(
    report: _Report,
    results: pd.DataFrame,
    fits: pd.DataFrame,
    a_min: AMin,
    n_test: int | Mapping[str, int] | None,
    devices: Mapping[str | None, int],
    *,
    fitting: bool = True,
) -> None:
    """Fit quality and every warning; without ``fitting`` (a store with no σ to fit) neither
    the fit method nor the lack of curves."""
    report.heading("Fit quality and warnings" if fitting else "Warnings", anchor="warnings")
    if fitting:
        _fit_method(report, a_min, n_test)
    lines = []
    if not fits.empty:
        columns = curve_group_columns(fits)
        for _, row in fits[fits["quality"] != "ok"].iterrows():
            group = {c: row[c] for c in columns if c in row}
            lines.append(f"{_label(group)}: {row['quality']}")
    if not fits.empty and _plateau_suspects(fits).any():
        lines.append(
            "a poor fit may be a curve with a plateau (multiplicative noise without BatchNorm): "
            "`walking-noise fit STORE --double` fits two stacked logistics"
        )
    status = results["status"] if "status" in results else pd.Series(dtype=object)
    waiting = {s: int((status == s).sum()) for s in ("pending", "running")}
    if sum(waiting.values()):
        lines.append(
            f"{counted(sum(waiting.values()), 'experiment')} not finished "
            f"({waiting['pending']} pending, {waiting['running']} running): the curves, fits "
            "and figures below leave them out, so a curve may lack some of its σ; run the sweep "
            "again to finish them, then the report"
        )
    failed = int((results["status"] == "failed").sum()) if "status" in results else 0
    if failed:
        lines.append(f"{failed} experiments failed; `walking-noise retry STORE --failed`")
        errors = results.loc[results["status"] == "failed", "error"].dropna()
        for text, count in distinct_errors(str(e) for e in errors)[:3]:
            times = f" ({count} experiments)" if count > 1 else ""
            lines.append(f"error{times}: {text[:300]}")
    if "diverged" in results:
        diverged = int(results["diverged"].fillna(False).astype(bool).sum())
        if diverged:
            lines.append(diverged_note(diverged))
    kinds = list(dict.fromkeys(_device_kind(d) for d in devices if d is not None))
    if len(kinds) > 1:
        lines.append(
            f"the experiments computed on {len(kinds)} kinds of device ({', '.join(kinds)}): "
            "the CPU and a GPU, or two GPU models, draw other noise for the same seed and round "
            "otherwise, so curves that mix them agree in distribution, not number for number; "
            "`--where device=…` selects one"
        )
    if fits.empty and fitting:
        lines.insert(0, "no curve to fit: no finished experiment with a scalar σ")
    if lines:
        report.items(lines, "warn")
    elif fitting:
        report.paragraph("No warnings: every fit converged with μ inside the sampled σ.")
    else:
        report.paragraph("No warnings.")


def _weight_noise_only(results: pd.DataFrame) -> bool:
    """A store of weight noise alone (a Noisy Machines study): it has no σ, and nothing to fit
    is no warning there."""
    done = results[results["status"] == "done"] if "status" in results else results
    return not done.empty and has_weight_noise(done)


def _fit_method(report: _Report, a_min: AMin, n_test: int | Mapping[str, int] | None) -> None:
    """How the midpoints are fitted, in words."""
    if isinstance(n_test, Mapping):
        sizes = ", ".join(f"{k} {v}" for k, v in n_test.items()) or "unknown"
    else:
        sizes = "unknown" if n_test is None else str(n_test)
    report.paragraph(
        "Midpoint fits: the logistic F(σ) = 2·δa / (1 + exp((σ − μ)/s)) + a_min by weighted "
        "least squares, each σ weighted by the standard error of its mean over seeds, at least "
        f"{DEFAULT_FLOOR} and at least the binomial error of that mean, √(p(1−p)/n) with n = "
        f"test-set size × seeds (test-set sizes: {sizes}); a_min = {a_min}. σ spanning a "
        "factor ≥ 100 is fitted in log10 σ, where s is in decades. A * marks a flagged fit in "
        f"the tables. {ERROR_NOTATION}",
        "note",
    )


def _device_kind(label: str) -> str:
    """``cpu``, or a GPU's model from ``cuda:1 (NVIDIA H100 80GB HBM3)``: GPUs of one model
    draw and round alike, whatever their index."""
    name = label.partition(" (")[2].rstrip(")")
    return name or label


def _midpoints(report: _Report, fits: pd.DataFrame, sites: pd.DataFrame, tables: Path) -> None:
    report.heading("Midpoint noise levels", anchor="midpoints")
    if fits.empty:
        report.paragraph("No finished experiments with a scalar σ to fit.")
        return
    shown = readable_midpoints(fits)
    report.table_files(fits, tables, "midpoints", shown)
    report.table(shown)
    if amplitude_rows(fits).any():
        report.paragraph(AMPLITUDE_NOTE, "note")
    if partial_drops(fits).any():
        report.paragraph(PARTIAL_DROP_NOTE, "note")


#: Under a μ-per-site table with curves that drop only partly (``†``).
PARTIAL_DROP_NOTE = (
    "† The fitted floor a_min stays above half way from the top to chance: the curve drops "
    "only partly (as under multiplicative noise with BatchNorm), and μ is the middle of that "
    "partial drop, not a σ where accuracy falls half way to chance. Such a site is more robust "
    "than its μ reads next to sites that fall to chance; compare them by the accuracy "
    "preserved at the largest σ (below) and a_min (tables/sites.csv)."
)


def _plateau_suspects(fits: pd.DataFrame) -> pd.Series:
    """Poor fits of curves that may have a plateau: noise that scales x (multiplicative, or
    mixed) in a network without BatchNorm, where a double logistic may fit."""
    poor = fits["poor_fit"].fillna(False).astype(bool)
    scaling = fits["noise"].astype(str) != "additive"
    return poor & scaling & ~fits["batchnorm"].fillna(False).astype(bool)


def _site_pivot(part: pd.DataFrame) -> pd.DataFrame:
    """Sites as rows, one column per series (noisy training, clamping, …), μ ± err cells."""
    columns = [
        c for c in curve_group_columns(part) if c in part and c not in (*_SITE_FAMILY, "placement")
    ]
    varying = [c for c in columns if part[c].map(cell_text).nunique() > 1]
    frame = part.copy()
    frame["series"] = [describe_difference(dict(r), varying) or "μ" for _, r in frame.iterrows()]
    frame["row"] = [
        f"{int(s)} {n}".strip() for s, n in zip(frame["site"], frame["site_name"], strict=True)
    ]
    frame["cell"] = midpoint_cells(frame, flagged=True)
    frame = frame.sort_values("site", kind="stable")
    table = frame.pivot_table(
        index="row", columns="series", values="cell", aggfunc="first", sort=False
    )
    table = table.reindex(list(dict.fromkeys(frame["row"])))
    table.index.name = "site"
    table.columns.name = None
    return table


def _walking(
    report: _Report,
    curves: pd.DataFrame,
    fits: pd.DataFrame,
    sites: pd.DataFrame,
    preservation: pd.DataFrame,
    names: SiteNames | None,
    tables: Path,
) -> None:
    walking = curves[curves["site"].notna() & curves["sigma"].notna()]
    walking = walking[walking["noise"] != "mixed"]
    if walking.empty:
        return
    report.heading("Walking noise: per-site robustness", anchor="walking")
    site_rows = sites[sites["noise"] != "mixed"] if not sites.empty else sites
    report.table_files(site_rows, tables, "sites")
    for family, part in _families(site_rows, _SITE_FAMILY):
        report.heading(f"μ per site: {_label(family)}", 3)
        report.table(_site_pivot(part), index=True)
        partial = partial_drops(part)
        if partial.any():
            report.paragraph(PARTIAL_DROP_NOTE, "note")
        names_map = _names(names, family)
        family_curves = _select(walking, family)
        report.figure(
            figures.site_mu_figure(
                part, title=f"μ per site: {_label(family)}", site_names=names_map
            ),
            "site-mu",
            f"Midpoint noise level per site, {_label(family)} (cf. paper Fig. 2). {SITE_MU_MARKS}",
            family,
        )
        kept = np.isfinite(part["mu"].astype(float)) & part["mu_in_range"] & ~partial
        finite = part["mu"][kept]
        if len(finite):
            median = float(np.exp(np.log(finite.astype(float)).median()))
            target = figures.nearest_sigma(family_curves, median)
            which = (
                f"the measured σ nearest {median:.3g}, the median μ of the sites whose fits "
                "are in range"
            )
            if partial.any():
                which += " and fall at least half way to chance"
        else:
            target = figures.nearest_sigma(family_curves, float(family_curves["sigma"].max()))
            which = "the largest σ"
        report.figure(
            figures.site_accuracy_figure(
                family_curves, target, title=_label(family), site_names=names_map
            ),
            "site-accuracy",
            f"Accuracy per site at σ = {target:.3g} ({which}), {_label(family)} (cf. paper "
            f"Fig. 3). {SITE_ACCURACY_MARKS}",
            family,
        )
        others = [c for c in curve_group_columns(family_curves) if c not in (*family, "placement")]
        for sub, sub_curves in _families(family_curves, others):
            label = _label(family | sub)
            report.figure(
                figures.accuracy_figure(sub_curves, fits, title=label, site_names=names_map),
                "accuracy",
                f"Accuracy vs σ per site with fitted logistics, {label} (cf. Fig. 1). "
                f"{ACCURACY_MARKS}",
                family | sub,
            )

    if preservation.empty:
        return
    kept = preservation[preservation["site"].notna() & (preservation["noise"] != "mixed")]
    if not kept.empty:
        report.heading("Accuracy preserved at the largest σ", 3)
        shown = kept
        report.table_files(kept, tables, "preservation")
        columns = [c for c in curve_group_columns(kept) if c != "placement"]
        varying = [c for c in columns if kept[c].map(cell_text).nunique() > 1]
        display = shown[varying].map(cell_text) if varying else pd.DataFrame(index=shown.index)
        display["site"] = shown["site"].astype(int)
        display["σ max"] = shown["sigma_max"].map(cell_text)
        display["preserved"] = [
            format_mu(v, e)
            for v, e in zip(shown["preservation"], shown["preservation_err"], strict=True)
        ]
        display["clean accuracy (smallest σ)"] = shown["clean_accuracy"].map(cell_text)
        report.table(display.reset_index(drop=True))
        report.paragraph(
            "preserved = accuracy at σ max / clean test accuracy of the models of the curve's "
            "smallest σ: the shared clean model for inference-only noise, the least noisy "
            "training for noisy training (a model trained at σ max may itself test far lower "
            "without noise).",
            "note",
        )
        for family, part in _families(kept, _PRESERVATION_FAMILY):
            report.figure(
                figures.preservation_figure(
                    part,
                    title=f"accuracy preserved at {_sigmas_text(part['sigma_max'])}: "
                    f"{part['dataset'].iloc[0]} · {_label(family)}",
                    site_names=_names(names, {"dataset": part["dataset"].iloc[0]} | family),
                ),
                "preservation",
                f"Accuracy at the largest σ / clean accuracy per site, {_label(family)} "
                f"(cf. paper Fig. 5). {PRESERVATION_MARKS}",
                family,
            )


def _global(report: _Report, curves: pd.DataFrame, fits: pd.DataFrame, tables: Path) -> None:
    table = global_table(fits) if not fits.empty else fits
    if table.empty:
        return
    report.heading("Global noise", anchor="global")
    report.table_files(table, tables, "global", readable_midpoints(table))
    report.table(pivot_mu(table), index=True)
    report.paragraph("μ ± error per configuration (cf. paper Tables 1 and 4).", "note")
    if amplitude_rows(table).any():
        report.paragraph(AMPLITUDE_NOTE, "note")
    glob = curves[
        curves["placement"].astype(str).str.startswith("global") & curves["sigma"].notna()
    ]
    family_columns = [c for c in curve_group_columns(glob) if c not in ("batchnorm", "placement")]
    for family, part in _families(glob, family_columns):
        label = _label(family)
        report.figure(
            figures.accuracy_figure(part, fits, title=label),
            "global",
            f"Accuracy vs σ, global noise, {label} (cf. paper Fig. 1). {ACCURACY_MARKS}",
            family,
        )


def _sigmas_text(sigmas: pd.Series) -> str:
    """``σ = 1e+06``, or ``σ = 100 … 1e+06`` where the series of a figure differ."""
    values = sorted({float(v) for v in sigmas.dropna()})
    if not values:
        return "the largest σ"
    return f"σ = {values[0]:g}" + (f" … {values[-1]:g}" if len(values) > 1 else "")


def _mixed(report: _Report, curves: pd.DataFrame) -> None:
    mixed = curves[(curves["noise"] == "mixed") & (curves["sigma_mul"] > 0)]
    mixed = mixed[mixed["sigma_add"] > 0]
    if mixed.empty:
        return
    report.heading("Mixed noise", anchor="mixed")
    columns = [c for c in curve_group_columns(mixed) if c not in ("order", "ratio")]
    for family, part in _families(mixed, columns):
        label = _label(family)
        report.figure(
            figures.mixed_heatmap_figure(part, title=label),
            "mixed",
            f"Accuracy over σ_mul × σ_add, {label} (cf. paper Fig. 6)",
            family,
        )


def _noisy_machines(report: _Report, results: pd.DataFrame, tables: Path) -> None:
    """Accuracy vs weight noise η by training (Zhou et al.), where an experiment has η > 0:
    such a study has no σ to fit, and this table is what it measured."""
    done = results[results["status"] == "done"] if "status" in results else results
    if "noisy_test_accuracy" not in done or not has_weight_noise(done):
        return
    table = weight_noise_accuracy(done)
    wide = accuracy_vs_eta(table).rename(columns=lambda training: f"{training} (%)")
    report.heading("Noisy Machines: accuracy vs weight noise η", anchor="noisy-machines")
    report.table_files(table, tables, "noisy_machines", wide)
    report.table(wide, index=True)
    columns = [c for c in table.attrs.get("group_columns", ()) if c in table]
    for family, part in _families(table, columns):
        label = _label(family)
        report.figure(
            figures.eta_accuracy_figure(part, title=label),
            "noisy-machines",
            f"Noisy test accuracy vs weight noise η by training, {label}: mean ± std over "
            "seeds (cf. Zhou et al., arXiv 2001.04974)",
            family,
        )
    report.paragraph(
        "Noisy test accuracy in % (mean ± std over seeds) under weight noise "
        "N(0, (η·(max W − min W))²) per layer, by training (cf. Zhou et al., arXiv 2001.04974)."
        + (f" {ETA_ZERO_NOTE}" if shares_clean_models(table) else "")
        + (f" The {setting}." if (setting := distillation_settings(table)) else ""),
        "note",
    )


def _weights(report: _Report, results: pd.DataFrame, tables: Path, names: SiteNames | None) -> None:
    if "weights" not in results or "recipe.clamp" not in results:
        return
    done = results[results["status"] == "done"] if "status" in results else results
    clamps = pd.to_numeric(done["recipe.clamp"], errors="coerce")
    values = sorted(float(c) for c in clamps.dropna().unique())
    if not values or clamps.notna().all():
        return
    report.heading("Weight growth: unclamped vs clamped", anchor="weights")
    report.paragraph(
        "Mean |w| per layer, averaged over the trained models of the configurations (σ, site, "
        "other settings) that both the unclamped and the clamped runs have; ratio = "
        "unclamped / clamped (cf. paper Table 2).",
        "note",
    )
    frames = []
    by = [c for c in ("dataset", "model", "batchnorm", "noise", "train_noise") if c in done]
    for clamp in values:
        table = weight_ratio_table(done, {"recipe.clamp": None}, {"recipe.clamp": clamp}, by=by)
        table = table[(table["models_a"] > 0) & (table["models_b"] > 0)]
        if table.empty:
            continue
        frames.append(table.assign(clamp=clamp, **_clamp_groups(clamp)))
    if not frames:
        report.paragraph("No configuration has both clamped and unclamped models.")
        return
    table = pd.concat(frames, ignore_index=True)
    at_site = _weights_at_site(done, values, by, names)
    if not at_site.empty:
        report.paragraph(
            "At the noisy site's own layer: for walking noise at a site that follows a layer "
            "with weights, that layer's mean |w|, over the models with noise at that site "
            "only. The table after it averages each layer over every site and σ, where noise "
            "elsewhere dilutes the growth."
        )
        report.table_files(at_site, tables, "weights_at_site")
        report.table(_weight_display(at_site, [*by, "clamp", "site", "layer"]))
    report.table_files(table, tables, "weights")
    report.table(_weight_display(table, [*by, "clamp", "layer"]))


def _weight_display(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A weight comparison as shown: its keys, both means and the ratio with its error."""
    display = table[keys].map(cell_text)
    display["mean |w| unclamped"] = table["mean_abs_a"].map(cell_text)
    display["mean |w| clamped"] = table["mean_abs_b"].map(cell_text)
    display["ratio"] = [
        format_mu(r, e) for r, e in zip(table["ratio"], table["ratio_err"], strict=True)
    ]
    return display


def _clamp_groups(clamp: float) -> dict[str, str]:
    """Which group each of a weight table's ``_a`` and ``_b`` columns is, for its CSV."""
    return {"a": "recipe.clamp=null", "b": f"recipe.clamp={clamp:g}"}


def _weights_at_site(
    done: pd.DataFrame, clamps: list[float], by: list[str], names: SiteNames | None
) -> pd.DataFrame:
    """Unclamped against clamped mean |w| of the layer each walking-noise site follows, over
    the models with noise at that site (empty without walking noise or site names)."""
    frame = prepare_results(done)
    walking = frame["site"].notna() & frame["train_noise"].astype(bool)
    if names is None or not walking.any() or not {"dataset", "model", "batchnorm"} <= set(by):
        return pd.DataFrame()
    frames = []
    for clamp in clamps:
        table = weight_ratio_table(
            frame[walking], {"recipe.clamp": None}, {"recipe.clamp": clamp}, by=[*by, "site"]
        )
        keep = [
            row.layer == _site_module(names, row.dataset, row.model, row.batchnorm, row.site)
            and row.models_a > 0
            and row.models_b > 0
            for row in table.itertuples()
        ]
        frames.append(table[keep].assign(clamp=clamp, **_clamp_groups(clamp)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _site_module(names: SiteNames, dataset: str, model: str, batchnorm: bool, site: int) -> str:
    """The module path of the layer a site follows (``layers.1`` of ``layers.1:Linear``)."""
    name = dict(names(dataset, model, bool(batchnorm))).get(int(site), "")
    return name.rsplit(":", 1)[0] if ":" in name else ""


def _config(report: _Report, results: pd.DataFrame, sweeps: Mapping[str, str]) -> None:
    report.heading("Sweep files", anchor="config")
    if not sweeps:
        report.paragraph("The store keeps no sweep file (experiments were added directly).")
    for name, text in sorted(sweeps.items()):
        report.heading(name, 3)
        report.pre(text)


# -- helpers ----------------------------------------------------------------------------------


def _names(names: SiteNames | None, family: Mapping[str, Any]) -> dict[int, str]:
    if names is None or not {"dataset", "model", "batchnorm"} <= set(family):
        return {}
    return dict(names(family["dataset"], family["model"], bool(family["batchnorm"])))


def _select(frame: pd.DataFrame, values: Mapping[str, Any]) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for column, value in values.items():
        if isinstance(value, float) and math.isnan(value):
            mask &= frame[column].isna()
        else:
            mask &= frame[column] == value
    part = frame[mask]
    part.attrs = dict(frame.attrs)
    return part
