"""The SQNR profile figure: one line per setting, noise-free sites named, PNG and SVG."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from walkingnoise.report.profiles import setting_label, sqnr_figure


def _profile(sigma: float, first_noisy: int) -> pd.DataFrame:
    rows = []
    for site in range(5):
        noisy = site >= first_noisy
        rows.append(
            {
                "site": site,
                "site_name": f"layer{site}:Linear",
                "kind": "linear",
                "injects": site == first_noisy,
                "signal_power": 1.0,
                "noise_power": sigma**2 if noisy else 0.0,
                "sqnr_db": -20 * math.log10(sigma) - site if noisy else math.inf,
                "noise": "additive",
                "placement": f"walking:{first_noisy}",
                "sigma": sigma,
            }
        )
    return pd.DataFrame(rows)


def test_one_line_per_setting_and_noise_free_sites_named(tmp_path: Path) -> None:
    profile = pd.concat([_profile(0.1, 2), _profile(1.0, 2)], ignore_index=True)
    figure = sqnr_figure(profile, title="test $profile", out=tmp_path, name="sqnr")
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["additive walking:2 σ=0.1", "additive walking:2 σ=1"]
    drawn = [line for line in ax.get_lines() if line.get_label() in labels]
    assert [list(line.get_xdata()) for line in drawn] == [[2.0, 3.0, 4.0]] * 2
    assert list(drawn[0].get_ydata()) == [18.0, 17.0, 16.0]
    notes = [t.get_text() for t in ax.texts]
    assert any("noise-free (+∞ dB), not drawn: site 0, 1" in note for note in notes)
    assert ax.get_title() == r"test \$profile"
    assert (tmp_path / "sqnr.png").stat().st_size > 0
    svg = (tmp_path / "sqnr.svg").read_text()
    assert "layer4:Linear" in svg


def test_global_profile_has_no_note() -> None:
    profile = _profile(0.5, 0)
    figure = sqnr_figure(profile)
    assert not figure.axes[0].texts


def test_setting_label_of_a_sigma_pair() -> None:
    row = {"noise": "mixed", "placement": "global", "sigma": (0.1, 0.2)}
    assert setting_label(row) == "mixed global σ=(0.1, 0.2)"
