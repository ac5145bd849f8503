"""Core types shared by every stage of a run: samples, conversations, labels, methods, judges.

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
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from calib.models import VLM

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
    """The shape every calibration method has (no base class; ``_target_`` is the registry)."""

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Learn from the calibration split (may do nothing); write artifacts into workdir."""

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
