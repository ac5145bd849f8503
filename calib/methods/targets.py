"""What a method teaches for *safe* samples: the base model's own answer, when it helps.

Few-shot demonstrations and LoRA targets answer a safe look-alike with the base model's own
answer (generated once with no method and cached, :func:`calib.methods.none.base_answers`).
Taken unfiltered, every over-cautious refusal of the base model would be taught as the right
answer to a safe query, which is the opposite of calibration. So the answers are judged with
the run's judge first, and only a helpful one (COMPLY) is taught as is; for the others
(REFUSE, WARN, IRRELEVANT, EMPTY, UNJUDGED) ``method.safe_target`` decides:

- ``drop``: the sample is not used;
- ``base_if_helpful``: the sample is taught ``method.safe_template`` instead;
- ``template``: every safe sample is taught the template (no base answers at all).

How many were kept, dropped and replaced goes into the method's card and ``metrics.json``
(``method.safe_targets``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calib.errors import ConfigError
from calib.methods.none import base_answers
from calib.model.vlm import VLM
from calib.types import Judge, Label, Sample

POLICIES = ("drop", "base_if_helpful", "template")
HELPFUL = frozenset({Label.COMPLY})


@dataclass(frozen=True)
class SafeTargets:
    """The answer taught for each safe sample kept, and what happened to the others.

    Attributes:
        answers: sample id -> the answer to teach (kept or replaced samples only).
        sources: sample id -> ``base_model`` or ``template``.
        judged: sample id -> the judge's label of the base answer (when one was generated).
    """

    answers: dict[str, str]
    sources: dict[str, str]
    judged: dict[str, str] = field(default_factory=dict)

    def counts(self, total: int) -> dict[str, Any]:
        """``kept`` / ``replaced`` / ``dropped`` counts and the judge labels of base answers."""
        sources = Counter(self.sources.values())
        return {
            "total": total,
            "kept": sources["base_model"],
            "replaced": sources["template"],
            "dropped": total - len(self.answers),
            "base_answer_labels": dict(sorted(Counter(self.judged.values()).items())),
        }


def check_policy(policy: str, template: str | None) -> list[str]:
    """Config problems with ``method.safe_target`` / ``method.safe_template``."""
    problems = []
    if policy not in POLICIES:
        problems.append(f"method.safe_target={policy!r} must be one of {', '.join(POLICIES)}")
    needs_template = policy in ("base_if_helpful", "template")
    if needs_template and not (isinstance(template, str) and template.strip()):
        problems.append(
            f"method.safe_target={policy} needs method.safe_template: the helpful answer taught "
            "in place of an unhelpful base answer"
        )
    return problems


def safe_targets(
    vlm: VLM,
    samples: Sequence[Sample],
    *,
    judge: Judge,
    policy: str,
    template: str | None,
    batch_size: int,
    decoding: Mapping[str, Any],
    cache_dir: str | os.PathLike | None,
) -> SafeTargets:
    """The answers to teach for ``samples`` (safe ones), as ``policy`` says.

    Raises:
        ConfigError: ``policy`` or ``template`` is invalid.
    """
    problems = check_policy(policy, template)
    if problems:
        raise ConfigError(problems)
    if policy == "template":
        return SafeTargets(
            answers={s.id: str(template).strip() for s in samples},
            sources={s.id: "template" for s in samples},
        )
    answers = base_answers(
        vlm, samples, batch_size=batch_size, decoding=dict(decoding), cache_dir=cache_dir
    )
    labels = judge.label(samples, answers) if samples else []
    kept: dict[str, str] = {}
    sources: dict[str, str] = {}
    for sample, answer, label in zip(samples, answers, labels, strict=True):
        if label in HELPFUL:
            kept[sample.id], sources[sample.id] = answer.strip(), "base_model"
        elif policy == "base_if_helpful":
            kept[sample.id], sources[sample.id] = str(template).strip(), "template"
    judged = {s.id: label.value for s, label in zip(samples, labels, strict=True)}
    return SafeTargets(kept, sources, judged)
