"""The quickstart study on digits: rows, the effect of σ, and the accuracy table."""

from __future__ import annotations

import pandas as pd
import pytest

from walkingnoise.quickstart import accuracy_table, quickstart

SIGMAS = (0.01, 100.0)
PLACEMENTS = ("global-except:batchnorm", "walking:0", "walking:10")
TRAININGS = ("inference-only", "noisy")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return quickstart(epochs=5, sigmas=SIGMAS, sites=(0, 10), eval_repeats=2, progress=False)


def test_one_row_per_training_placement_and_sigma(frame: pd.DataFrame) -> None:
    assert len(frame) == len(TRAININGS) * len(PLACEMENTS) * len(SIGMAS)
    keys = set(zip(frame["training"], frame["placement"], frame["sigma"], strict=True))
    assert keys == {(t, p, s) for t in TRAININGS for p in PLACEMENTS for s in SIGMAS}
    assert frame["accuracy"].between(0.0, 1.0).all()
    assert (frame["accuracy_std"] >= 0).all()
    names = dict(zip(frame["placement"], frame["site_name"], strict=True))
    assert names == {
        "global-except:batchnorm": "all",
        "walking:0": "input",
        "walking:10": "layers.10:Linear",
    }
    assert 0.5 < frame.attrs["clean_accuracy"] <= 1.0


def test_small_sigma_beats_large_sigma_everywhere(frame: pd.DataFrame) -> None:
    for (training, placement), part in frame.groupby(["training", "placement"]):
        acc = part.set_index("sigma")["accuracy"]
        assert acc[0.01] > acc[100.0], (training, placement)
        # A tiny σ costs (almost) nothing against the clean model.
        if training == "inference-only":
            assert acc[0.01] == pytest.approx(frame.attrs["clean_accuracy"], abs=0.03)


def test_huge_global_noise_is_near_chance(frame: pd.DataFrame) -> None:
    huge = frame[(frame["placement"] == "global-except:batchnorm") & (frame["sigma"] == 100.0)]
    assert len(huge) == 2
    assert (huge["accuracy"] < 0.3).all()


@pytest.mark.parametrize("training", TRAININGS)
def test_accuracy_table_has_sigma_rows_and_site_named_columns(
    frame: pd.DataFrame, training: str
) -> None:
    table = accuracy_table(frame, training)
    assert table.shape == (len(SIGMAS), len(PLACEMENTS))
    assert list(table.index) == list(SIGMAS)
    assert list(table.columns) == [
        "global-except:batchnorm",
        "walking:0 input",
        "walking:10 layers.10:Linear",
    ]
    part = frame[frame["training"] == training]
    row = part[(part["placement"] == "walking:10") & (part["sigma"] == 0.01)].iloc[0]
    assert table.loc[0.01, "walking:10 layers.10:Linear"] == pytest.approx(100 * row["accuracy"])
