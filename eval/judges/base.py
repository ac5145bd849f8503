"""What every judge shares: a label with its reason, empty-response detection, input checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calib.types import Label, Sample


@dataclass(frozen=True)
class Judgement:
    """One judged response: the label and a short, human-readable reason for it."""

    label: Label
    reason: str


def is_empty(response: str | None) -> bool:
    """True when the model produced no text (None, "", or only whitespace)."""
    return response is None or not str(response).strip()


def empty_judgement() -> Judgement:
    return Judgement(Label.EMPTY, "empty response")


def check_lengths(samples: Sequence[Sample], responses: Sequence[str]) -> None:
    """Raise a clear error when samples and responses do not pair up one-to-one."""
    if len(samples) != len(responses):
        raise ValueError(
            f"judge got {len(samples)} samples but {len(responses)} responses: "
            "pass exactly one response per sample, in the same order"
        )


class ReasonedJudge:
    """Mixin: a judge that implements ``judge_with_reasons`` gets ``label`` for free."""

    def judge_with_reasons(
        self, samples: Sequence[Sample], responses: Sequence[str]
    ) -> list[Judgement]:
        raise NotImplementedError

    def label(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[Label]:
        """The ``calib.types.Judge`` contract: one Label per response, in order."""
        return [j.label for j in self.judge_with_reasons(samples, responses)]
