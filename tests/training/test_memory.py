"""Memory budgets: the sizes the budget variable accepts, how they fail, the stacks they allow."""

from __future__ import annotations

import logging

import pytest
import torch

from walkingnoise.models import build_model
from walkingnoise.noise import instrument
from walkingnoise.training.memory import BUDGET_ENV, check_budget, models_per_stack, parse_bytes


@pytest.mark.parametrize(
    ("text", "size"),
    [("1500000", 1_500_000), ("2GB", 2_000_000_000), ("512MiB", 512 * 2**20), (" 1.5 kb ", 1500)],
)
def test_sizes_with_and_without_a_unit(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["lots", "1..2GB", ".", "2 GiBs", "-1GB", ""])
def test_a_malformed_size_names_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^{BUDGET_ENV}: not a size: "):
        parse_bytes(text)


def test_the_variable_is_checked_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "1..2GB")
    with pytest.raises(ValueError, match=BUDGET_ENV):
        check_budget()
    monkeypatch.setenv(BUDGET_ENV, "2GB")
    check_budget()


def test_a_budget_below_one_model_stacks_one_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8))
    monkeypatch.setenv(BUDGET_ENV, "1KB")
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        assert models_per_stack(model, 64, torch.device("cpu"), training=True) == 1
    assert "below one model's" in caplog.text
    caplog.clear()
    monkeypatch.setenv(BUDGET_ENV, "1GB")
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        assert models_per_stack(model, 64, torch.device("cpu"), training=True) > 100
    assert caplog.text == ""
