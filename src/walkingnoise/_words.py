"""Counts in words for messages: one place decides singular or plural."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``1 experiment``, ``3 experiments``: the count with its noun in the right number."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
