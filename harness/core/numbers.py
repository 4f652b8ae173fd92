"""Numbers as the tables hold them: a figure is a finite float or it is missing."""
from __future__ import annotations

import math
from typing import Any, Optional


def finite_or_none(value: Any) -> Optional[float]:
    """A float if value is a finite number, else None (None, NaN, pandas NA, text)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
