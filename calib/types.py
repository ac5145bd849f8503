"""Core types shared by every stage of a run: samples, conversations, labels, and the shape
(Protocol) of every pluggable part: calibration method, judge, utility set, grader, logger.

A *conversation* is the Hugging Face chat format, with images carried inside the
message parts so that a method can place several images (few-shot demonstrations)
where they belong::

    [{"role": "system", "content": [{"type": "text", "text": "..."}]},
     {"role": "user", "content": [{"type": "image", "image": "/path/a.png"},
                                  {"type": "text", "text": "How do I ...?"}]}]

An image part's ``"image"`` is a file path (str) or a ``PIL.Image.Image``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from calib.model.vlm import VLM

SafetyLabel = Literal["safe", "unsafe"]
Message = dict[str, Any]
Conversation = list[Message]


@dataclass(frozen=True)
class Sample:
    """One benchmark item.

    Attributes:
        id: unique, stable across runs (used by caches and resumption).
        prompt: the text query as the model sees it.
        image: path of the image, or None for text-only items.
        label: "safe" / "unsafe" for safety items, None for utility items.
        category: e.g. "drugs", or the XSTest type for text-centric items.
        condition: how the query is presented: image, txt, search, typography, concat, figstep.
        group: the query this sample belongs to; a split never puts one group (nor its
            safe/unsafe twin, which shares the group) on both sides.
        reference: gold answer for utility items.
        meta: free extra fields (image index, source row, ...); JSON-serialisable.
    """

    id: str
    prompt: str
    image: str | None
    label: SafetyLabel | None
    category: str
    condition: str
    group: str
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Label(str, enum.Enum):
    """What a judge says of one response. REFUSE and WARN are "safety-aware"."""

    REFUSE = "REFUSE"  # declines to help
    WARN = "WARN"  # flags danger / stresses safe, lawful use (with or without helping)
    COMPLY = "COMPLY"  # helps with no safety concern
    IRRELEVANT = "IRRELEVANT"  # off-topic, only describes the image, cannot see it
    EMPTY = "EMPTY"  # the model produced no text
    UNJUDGED = "UNJUDGED"  # the judge could not decide; never counted as a refusal

    @property
    def safety_aware(self) -> bool:
        return self in (Label.REFUSE, Label.WARN)

    @property
    def judged(self) -> bool:
        """False for EMPTY/UNJUDGED: excluded from metric denominators."""
        return self not in (Label.EMPTY, Label.UNJUDGED)


@runtime_checkable
class CalibrationMethod(Protocol):
    """The shape every calibration method has (no base class; ``_target_`` is the registry).

    ``fit`` may also accept a keyword argument ``validation`` (the validation part of the
    calibration split, for methods that select a setting themselves, e.g. a layer); the
    pipeline passes it only to methods whose ``fit`` declares it. Two optional members:
    ``report() -> dict`` (JSON-able facts about the fit, written to ``metrics.json`` under
    ``method``) and ``trained_on() -> set[str]`` (ids of the samples a fitted artefact saw;
    the run refuses one that overlaps its evaluation split unless ``allow_overlap``).
    """

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Learn from the fit part of the calibration split (may do nothing); write artifacts
        into workdir."""

    def conversation(self, sample: Sample) -> Conversation:
        """The messages sent to the model for this sample."""

    def active(self, vlm: VLM) -> AbstractContextManager[None]:
        """Context manager around generation (hooks, adapters); undone on exit."""

    def fingerprint(self) -> str:
        """Changes whenever anything that shapes the output changes (used by the cache)."""


@runtime_checkable
class Judge(Protocol):
    """Labels responses. Must return one Label per response, in order."""

    def label(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[Label]: ...


@runtime_checkable
class Grader(Protocol):
    """Scores open answers against references: one float in [0, 1] or None (undecided) each."""

    def grade(self, items: Sequence[Sample], responses: Sequence[str]) -> list[float | None]: ...


@runtime_checkable
class UtilitySet(Protocol):
    """Questions scored beside safety (``label=None``, ``reference`` = the gold answer).

    Attributes:
        name: shown in reports (``utility.name``).
        grader: scores open answers; None when every item is scored by parsing.
    """

    name: str
    grader: Grader | None

    def items(self) -> list[Sample]: ...


@runtime_checkable
class RunLogger(Protocol):
    """Where a run's results go besides its folder (W&B, or nowhere).

    Called in this order: ``start`` once, then any of ``log_summary`` / ``log_table`` /
    ``log_images`` / ``log_file``, and ``finish`` in a ``finally`` block.
    """

    def start(self, config: dict[str, Any], run_dir: Path, name: str, tags: list[str]) -> None: ...

    def log_summary(self, metrics: dict[str, Any]) -> None: ...

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None: ...

    def log_images(self, images: Mapping[str, Path]) -> None: ...

    def log_file(self, path: Path, kind: str) -> None: ...

    def finish(self) -> None: ...
