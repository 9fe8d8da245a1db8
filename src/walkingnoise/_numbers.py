"""Checks for numeric settings: YAML's ``true``/``false`` are not numbers here, and numbers
the computation cannot hold are refused with the settings, not in a run."""

from __future__ import annotations

from typing import Any

#: The largest float32: σ, learning rates and clamps are used in float32 tensors, where a
#: larger value overflows (``value cannot be converted to type float without overflow``).
FLOAT32_MAX = 3.4028234663852886e38

#: The largest seed a torch generator takes (a signed 64-bit integer).
MAX_SEED = 2**63 - 1


def no_bool(value: Any) -> Any:
    """``value`` as it is, unless it is (or holds) a bool: pydantic would read ``true`` as 1
    in a numeric field, so ``sigma: true`` or ``epochs: true`` would run instead of failing."""
    parts = value if isinstance(value, (list, tuple)) else (value,)
    if any(isinstance(part, bool) for part in parts):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


def within_float32(value: Any) -> Any:
    """``value`` if a float32 holds it (None passes): a pydantic field validator for settings
    used in float32 tensors (pydantic names the field in its error)."""
    if value is not None and abs(value) > FLOAT32_MAX:
        raise ValueError(f"{value:g} is beyond float32 (at most {FLOAT32_MAX:.2g})")
    return value
