"""Utility scoring and deltas against the same model with ``method=none``.

A method's worth is what it changes: ``metrics["deltas"]`` holds (method − baseline) for
SRA_u, SRA_s, strict SRA_s, their mean and the utility score, where the baseline is the
same model, data, decoding and judge with no method. Its responses come from the
generation cache — free when a ``method=none`` run (or an earlier job of the sweep) has
generated them — and are otherwise generated once and cached for every later run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from calib.cache import GenerationCache
from calib.generate import generate
from calib.methods.none import NoMethod
from calib.models import VLM
from calib.types import CalibrationMethod, Judge, Label, Sample
from eval.utility import UtilitySet, score_responses, utility_rows, utility_summary

SAFETY_KEYS = ("sra_u", "sra_s", "sra_s_strict", "mean")
SafetyScorer = Callable[[Sequence[Sample], Sequence[Label]], dict[str, Any]]


@dataclass(frozen=True)
class UtilityResult:
    """``metrics["utility"]`` and one row per item for ``utility_responses.jsonl``."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]


def score_utility(
    utility_set: UtilitySet, items: Sequence[Sample], responses: Sequence[str]
) -> UtilityResult:
    scores = score_responses(items, responses, utility_set.grader)
    return UtilityResult(
        utility_summary(utility_set.name, items, scores), utility_rows(items, responses, scores)
    )


@dataclass(frozen=True)
class Baseline:
    """The no-method figures, and how many of its responses were generated vs cached."""

    safety: dict[str, Any]
    utility: dict[str, Any] | None
    generated: int
    cached: int


def is_baseline(method: CalibrationMethod) -> bool:
    """True when the method changes nothing (its outputs are the baseline's)."""
    return method.fingerprint() == NoMethod().fingerprint()


def baseline_scores(
    vlm: VLM,
    judge: Judge,
    samples: Sequence[Sample],
    utility_set: UtilitySet,
    utility_items: Sequence[Sample],
    *,
    batch_size: int,
    decoding: dict[str, Any],
    cache: GenerationCache | None,
    score_safety: SafetyScorer,
) -> Baseline:
    """Answers of the model with no method (cache first), judged and scored like the run's."""
    everything = [*samples, *utility_items]
    generation = generate(
        vlm,
        NoMethod(),
        everything,
        batch_size=batch_size,
        decoding=decoding,
        cache=cache,
        progress=False,
    )
    safety_responses = generation.responses[: len(samples)]
    labels = judge.label(samples, safety_responses)
    utility = None
    if utility_items:
        responses = generation.responses[len(samples) :]
        utility = score_utility(utility_set, utility_items, responses).summary
    return Baseline(score_safety(samples, labels), utility, generation.generated, generation.cached)


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
        k: _difference(safety.get(k), baseline.safety.get(k)) for k in SAFETY_KEYS
    }
    result["utility"] = _difference(own_utility, base_utility)
    result["baseline"] = {
        **{k: baseline.safety.get(k) for k in SAFETY_KEYS},
        "utility": base_utility,
        "generated": baseline.generated,
        "cached": baseline.cached,
    }
    return result
