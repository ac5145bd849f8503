"""The uncalibrated baseline: the model as it is."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from calib.chat import default_conversation
from calib.models import VLM
from calib.types import Conversation, Sample


class NoMethod:
    """Asks every query as the benchmark authors do, with nothing added."""

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Nothing to learn."""

    def conversation(self, sample: Sample) -> Conversation:
        return default_conversation(sample)

    def active(self, vlm: VLM) -> AbstractContextManager[None]:
        return nullcontext()

    def fingerprint(self) -> str:
        return "none"
