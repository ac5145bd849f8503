"""Utility sets: the helpfulness a calibration method may cost, scored beside safety.

``conf/utility/<name>.yaml`` instantiates a *utility set*: an object with a ``name``, a
``grader`` (``None`` unless answers are open and graded by an LLM) and ``items()``, the
questions as :class:`~calib.types.Sample` s with ``label=None``, ``reference`` = the gold
answer, ``category`` = the task, and ``condition`` = how the answer is scored:

- ``exact``: the first word of ``meta["choices"]`` the response mentions must be the
  reference (the embedded set, :mod:`eval.utility.sample`);
- ``multiple_choice``: the option letter parsed from the response (``meta["options"]``);
- ``yes_no``: the first "yes" or "no";
- ``open``: the grader's score in [0, 1] (MM-Vet style).

Sets: ``sample`` (embedded, the default), ``none`` (skip: no items), and hub benchmarks
through :class:`eval.utility.hf.HFUtility`. The run generates answers with the method
active and stores :func:`utility_summary` as ``metrics["utility"]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calib.types import Grader, Sample, UtilitySet
from eval.utility.parse import score_exact, score_multiple_choice, score_yes_no

SCORED_CONDITIONS = ("exact", "multiple_choice", "yes_no", "open")


@dataclass(frozen=True)
class ItemScore:
    """The score of one answer (None: the grader could not decide) and what was parsed."""

    score: float | None
    answer: str | None


class NoUtility:
    """``utility=none``: no items, so the run skips the utility stage."""

    name = "none"
    grader: Grader | None = None

    def items(self) -> list[Sample]:
        return []


def score_responses(
    items: Sequence[Sample], responses: Sequence[str], grader: Grader | None = None
) -> list[ItemScore]:
    """Score each response by its item's ``condition``; open items go to ``grader`` in one batch."""
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} utility items but {len(responses)} responses")
    scores: list[ItemScore | None] = [None] * len(items)
    open_at = []
    for i, (item, response) in enumerate(zip(items, responses, strict=True)):
        kind, reference = item.condition, item.reference or ""
        if kind == "exact":
            scores[i] = ItemScore(*score_exact(response, reference, item.meta["choices"]))
        elif kind == "multiple_choice":
            scores[i] = ItemScore(*score_multiple_choice(response, reference, item.meta["options"]))
        elif kind == "yes_no":
            scores[i] = ItemScore(*score_yes_no(response, reference))
        elif kind == "open":
            open_at.append(i)
        else:
            raise ValueError(
                f"utility item {item.id} has condition={kind!r}; "
                f"expected one of {SCORED_CONDITIONS}"
            )
    if open_at:
        if grader is None:
            raise ValueError(
                "open-answer utility items need a grader: "
                "set utility.grader (see conf/utility/mmvet.yaml)"
            )
        grades = grader.grade([items[i] for i in open_at], [responses[i] for i in open_at])
        for i, grade in zip(open_at, grades, strict=True):
            scores[i] = ItemScore(grade, None if grade is None else f"{grade:.2f}")
    return [s for s in scores if s is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def utility_summary(
    name: str, items: Sequence[Sample], scores: Sequence[ItemScore]
) -> dict[str, Any]:
    """``metrics["utility"]``: overall and per-task mean score.

    Items the grader could not decide are left out of the means (``n_ungraded``); answers
    whose form could not be parsed count as wrong and are reported as ``n_unparsed``.
    """
    by_task: dict[str, list[float]] = defaultdict(list)
    graded: list[float] = []
    unparsed = ungraded = 0
    for item, result in zip(items, scores, strict=True):
        if result.score is None:
            ungraded += 1
            continue
        graded.append(result.score)
        by_task[item.category].append(result.score)
        unparsed += result.answer is None
    return {
        "set": name,
        "score": _mean(graded),
        "n": len(items),
        "n_unparsed": unparsed,
        "n_ungraded": ungraded,
        "by_task": {task: _mean(values) for task, values in sorted(by_task.items())},
    }


def utility_rows(
    items: Sequence[Sample], responses: Sequence[str], scores: Sequence[ItemScore]
) -> list[dict[str, Any]]:
    """One row per item for ``utility_responses.jsonl``."""
    return [
        {
            "id": item.id,
            "task": item.category,
            "kind": item.condition,
            "prompt": item.prompt,
            "image": item.image,
            "reference": item.reference,
            "response": response,
            "answer": result.answer,
            "score": result.score,
        }
        for item, response, result in zip(items, responses, scores, strict=True)
    ]


@dataclass(frozen=True)
class UtilityResult:
    """``metrics["utility"]`` and one row per item for ``utility_responses.jsonl``."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]


def score_utility(
    utility_set: UtilitySet, items: Sequence[Sample], responses: Sequence[str]
) -> UtilityResult:
    """Score a utility set's answers: the run's summary and its per-item rows."""
    scores = score_responses(items, responses, utility_set.grader)
    return UtilityResult(
        utility_summary(utility_set.name, items, scores), utility_rows(items, responses, scores)
    )
