"""Confidence intervals for task metrics: a proportion measured on n examples.

Pure and torch-free: `tgsp report` (tgflow_cli/report.py) draws them too."""

from __future__ import annotations

import math


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``p`` measured on ``n`` examples."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(p: float, n: int) -> list[float]:
    """[low, high] of the 95% interval, rounded for reports."""
    lo, hi = wilson(p, n)
    return [round(lo, 4), round(hi, 4)]
