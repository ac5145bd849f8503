"""What every judge shares: a label with its reason and confidence, empty responses, checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calib.errors import ConfigError
from calib.types import Label, Sample


@dataclass(frozen=True)
class Judgement:
    """One judged response.

    Attributes:
        label: what the judge says.
        reason: a short, human-readable reason (the phrase that fired, the judge's reply).
        confidence: how sure the judge is, in [0, 1]. For ``refusal_rules`` it is the
            specificity of the rule that fired (an explicit "I can't help with that" is
            0.95; "no rule matched, so COMPLY" is 0.5); for model judges it says how
            cleanly the reply named its class. A cascade escalates below a threshold.
        rule: a stable machine-readable name of what decided the label, e.g.
            ``decline.first_person``, ``warn.predicate``, ``comply.no_rule``, ``llm.class_line``.
    """

    label: Label
    reason: str
    confidence: float = 1.0
    rule: str = ""


def is_empty(response: str | None) -> bool:
    """True when the model produced no text (None, "", or only whitespace)."""
    return response is None or not str(response).strip()


def empty_judgement() -> Judgement:
    return Judgement(Label.EMPTY, "empty response", 1.0, "empty")


def check_lengths(samples: Sequence[Sample], responses: Sequence[str]) -> None:
    """Raise a clear error when samples and responses do not pair up one-to-one."""
    if len(samples) != len(responses):
        raise ValueError(
            f"judge got {len(samples)} samples but {len(responses)} responses: "
            "pass exactly one response per sample, in the same order"
        )


def check_max_unjudged(max_unjudged: float) -> float:
    """``judge.max_unjudged`` (a share in [0, 1]), or a ConfigError naming the key and fix."""
    if not 0.0 <= float(max_unjudged) <= 1.0:
        raise ConfigError(
            f"judge.max_unjudged={max_unjudged} must be a share between 0 and 1 "
            "(e.g. 0.05 for 5%; 1.0 never fails a run)"
        )
    return float(max_unjudged)


class ReasonedJudge:
    """Mixin: a judge that implements ``judge_with_reasons`` gets ``label`` for free.

    ``max_unjudged`` is the share of UNJUDGED labels above which a run should fail
    (``eval.judges.summary.unjudged_problem``); every judge config carries it.
    """

    max_unjudged: float = 0.05

    def judge_with_reasons(
        self, samples: Sequence[Sample], responses: Sequence[str]
    ) -> list[Judgement]:
        raise NotImplementedError

    def label(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[Label]:
        """The ``calib.types.Judge`` contract: one Label per response, in order."""
        return [j.label for j in self.judge_with_reasons(samples, responses)]
