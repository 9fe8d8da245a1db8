"""Memory budgets: the sizes ``$WALKINGNOISE_MEMORY_BUDGET`` accepts, and how they fail."""

from __future__ import annotations

import pytest

from walkingnoise.training.memory import BUDGET_ENV, check_budget, parse_bytes


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
