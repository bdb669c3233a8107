"""Rank correlation: how well one way of scoring architectures orders them like another.

:func:`kendall_tau` is Kendall's tau-b (ties in either list are allowed and
corrected for), computed over all pairs; :func:`ranks` gives average ranks
(ties share the mean of their positions). Written here so that nothing
beyond numpy is needed (scipy's ``kendalltau`` gives the same tau-b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["kendall_tau", "kendall_tau_null_se", "ranks"]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences; NaN when either is constant or shorter than 2.

    tau-b = (concordant - discordant) / sqrt((pairs - ties in x) * (pairs - ties in y)).
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"kendall_tau needs two sequences of the same length, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("kendall_tau needs finite values")
    n = a.size
    if n < 2:
        return math.nan
    score = 0.0
    untied_a = 0
    untied_b = 0
    # Row by row: O(n^2) time, O(n) memory (n is at most a few thousand architectures here).
    for i in range(n - 1):
        da = np.sign(a[i + 1:] - a[i])
        db = np.sign(b[i + 1:] - b[i])
        score += float(np.dot(da, db))
        untied_a += int(np.count_nonzero(da))
        untied_b += int(np.count_nonzero(db))
    if untied_a == 0 or untied_b == 0:
        return math.nan
    return score / math.sqrt(untied_a * untied_b)


def kendall_tau_null_se(n: int) -> float:
    """Standard deviation of tau over ``n`` pairs of independent, untied values: sqrt(2(2n+5) / (9n(n-1))).

    A measured tau within about two of these of 0 is not told apart from no relation.
    """
    return math.sqrt(2.0 * (2 * n + 5) / (9.0 * n * (n - 1))) if n > 1 else math.nan


def ranks(values: Sequence[float], *, descending: bool = False) -> np.ndarray:
    """Average ranks from 1 (the smallest, or the largest with ``descending``); ties get their mean rank."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if descending:
        v = -v
    order = np.argsort(v, kind="mergesort")
    out = np.empty(v.size, dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        out[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out
