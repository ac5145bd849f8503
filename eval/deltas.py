"""What a method changes: this run's figures minus the same model's with ``method=none``.

``metrics["deltas"]`` holds (method − baseline) for SRA_u, SRA_s, strict SRA_s, their mean
and the utility score, where the baseline is the same model, data, decoding and judge with
no method (:func:`calib.pipeline.baseline_figures` produces it, from the generation cache
when a ``method=none`` run or an earlier job of the sweep has already generated it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval.metrics import HEADLINE


@dataclass(frozen=True)
class Baseline:
    """The no-method figures, and how many of its responses were generated vs cached."""

    safety: dict[str, Any]
    utility: dict[str, Any] | None
    generated: int
    cached: int


def _difference(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def deltas(
    safety: dict[str, Any], utility: dict[str, Any] | None, baseline: Baseline
) -> dict[str, Any]:
    """``metrics["deltas"]``: method − baseline per figure, the baseline's own figures, and
    how many baseline responses this run had to generate (0 when all came from the cache)."""
    base_utility = (baseline.utility or {}).get("score")
    own_utility = (utility or {}).get("score")
    result: dict[str, Any] = {
        k: _difference(safety.get(k), baseline.safety.get(k)) for k in HEADLINE
    }
    result["utility"] = _difference(own_utility, base_utility)
    result["baseline"] = {
        **{k: baseline.safety.get(k) for k in HEADLINE},
        "utility": base_utility,
        "generated": baseline.generated,
        "cached": baseline.cached,
    }
    return result
