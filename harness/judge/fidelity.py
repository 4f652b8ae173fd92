"""One interoperability (fidelity) figure per cell: how faithfully a variant reproduces its reference.

    fidelity = exp(-(KL + WEIGHT_TERM * d_F))

KL is the mean KL divergence KL(p_ref || p_variant) between the reference's
and the cell's output distributions on the evaluation set (nats, the row's
`kl_divergence`); d_F is the relative Frobenius distance between reference and
(dequantized) variant weights (the row's `weight_rel_frobenius`). Both are 0
for an exact copy, so fidelity is 1 for an exact copy and falls towards 0 as
outputs or weights drift; exp(-KL) alone is the geometric-mean likelihood
ratio of the variant's predictions under the reference's.

A term that is not known counts as 0: a distilled student has other weights
than its teacher (no d_F), so its fidelity is output fidelity only; a cell
without outputs has no fidelity (None). Pure: no I/O.
"""
from __future__ import annotations

import math
from typing import Optional

#: how much one unit of relative weight distance counts against one nat of output KL
WEIGHT_TERM = 1.0


def fidelity(kl_divergence: Optional[float], weight_rel_frobenius: Optional[float] = None,
             weight_term: float = WEIGHT_TERM) -> Optional[float]:
    """exp(-(KL + weight_term * d_F)) in (0, 1]; None without an output KL."""
    if kl_divergence is None or _is_nan(kl_divergence):
        return None
    kl = max(float(kl_divergence), 0.0)  # float round-off can make an exact copy's KL -1e-12
    distance = 0.0 if weight_rel_frobenius is None or _is_nan(weight_rel_frobenius) else float(weight_rel_frobenius)
    return math.exp(-(kl + weight_term * max(distance, 0.0)))


def _is_nan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True
