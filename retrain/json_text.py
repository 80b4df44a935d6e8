"""JSON every parser reads. Python's json writes a NaN or infinity as a bare `NaN`, which is
not JSON (JavaScript's JSON.parse refuses it): such a figure is written as null instead, and
allow_nan=False turns one that slips past into an error rather than a file an app cannot read."""

from __future__ import annotations

import json
import math


def finite(value):
    """`value` with every NaN or infinite float (NumPy's included) replaced by None."""
    if isinstance(value, float):  # numpy.float64 is a float
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, indent: int | None = None) -> str:
    return json.dumps(finite(value), indent=indent, allow_nan=False)
