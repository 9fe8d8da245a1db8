"""A check for numeric settings: YAML's ``true``/``false`` are not numbers here."""

from __future__ import annotations

from typing import Any


def no_bool(value: Any) -> Any:
    """``value`` as it is, unless it is (or holds) a bool: pydantic would read ``true`` as 1
    in a numeric field, so ``sigma: true`` or ``epochs: true`` would run instead of failing."""
    parts = value if isinstance(value, (list, tuple)) else (value,)
    if any(isinstance(part, bool) for part in parts):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value
