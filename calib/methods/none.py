"""The uncalibrated baseline: the model as it is, and its own answers for other methods."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from calib.chat import default_conversation
from calib.generation.cache import GenerationCache
from calib.generation.generate import generate
from calib.model.vlm import VLM
from calib.types import Conversation, Sample

FINGERPRINT = "none"  # the cache rows of method=none; every method's baseline


class NoMethod:
    """Asks every query as the benchmark authors do, with nothing added."""

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Nothing to learn."""

    def conversation(self, sample: Sample) -> Conversation:
        return default_conversation(sample)

    def active(self, vlm: VLM) -> AbstractContextManager[None]:
        return nullcontext()

    def fingerprint(self) -> str:
        return FINGERPRINT


def base_answers(
    vlm: VLM,
    samples: Sequence[Sample],
    *,
    batch_size: int,
    decoding: dict[str, Any],
    cache_dir: str | os.PathLike | None,
    progress: bool = False,
) -> list[str]:
    """The base model's own answers (no method), generated once and cached in ``cache_dir``.

    Few-shot and LoRA use these as targets or demonstrations; they share cache rows with
    any ``method=none`` run of the same model, inputs and decoding settings.
    """
    cache = GenerationCache.in_dir(cache_dir) if cache_dir is not None else None
    try:
        return generate(
            vlm,
            NoMethod(),
            samples,
            batch_size=batch_size,
            decoding=decoding,
            cache=cache,
            progress=progress,
        ).responses
    finally:
        if cache is not None:
            cache.close()
