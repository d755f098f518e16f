"""One JSON document on stdout, the way every ``--json`` command prints it.

Apart from :mod:`smartset._cli_common` (which imports Typer) so that the fast entry
point (:mod:`smartset.cli`) prints ``samples --json`` byte for byte as the Typer command
does, without importing Typer or pydantic.
"""

from __future__ import annotations

import json
import math
import sys

__all__ = ["json_safe", "print_json"]


def json_safe(value):
    """``value`` with every NaN and infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    return value


def print_json(data) -> None:
    """One JSON document on stdout: valid JSON always (NaN and infinities become null)."""
    sys.stdout.write(json.dumps(json_safe(data), indent=2, default=str, ensure_ascii=False,
                                allow_nan=False) + "\n")
