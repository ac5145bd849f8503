"""Generating the responses of a method, as the config's decoding says, and the prompts
that do not fit the model's context."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calib.errors import DataError
from calib.generation.cache import GenerationCache
from calib.generation.generate import Generation, context_length, generate, prompt_tokens
from calib.model import VLM
from calib.types import (
    CalibrationMethod,
    Judge,
    Label,
    Sample,
)
from eval.data.base import DataSplits

log = logging.getLogger("calib.pipeline")


def decoding_settings(cfg: DictConfig) -> dict[str, Any]:
    gen = cfg.generation
    return {
        "max_new_tokens": gen.max_new_tokens,
        "do_sample": gen.do_sample,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "seed": cfg.seed,
    }


def open_cache(cfg: DictConfig) -> AbstractContextManager[GenerationCache | None]:
    """The generation cache shared by runs (``cache.enabled=false``: none)."""
    if not cfg.cache.enabled:
        return nullcontext()
    cache = GenerationCache.in_dir(cfg.paths.cache_dir)
    cache.check_writable()
    return cache


def generate_answers(
    cfg: DictConfig,
    vlm: VLM,
    method: CalibrationMethod,
    samples: Sequence[Sample],
    cache: GenerationCache | None,
    *,
    progress: bool = True,
) -> Generation:
    """One response per sample with the method active, as the config's decoding says."""
    return generate(
        vlm,
        method,
        samples,
        batch_size=cfg.generation.batch_size,
        decoding=decoding_settings(cfg),
        cache=cache,
        progress=progress,
        max_batch_tokens=cfg.generation.max_batch_tokens,
    )


def too_long(
    cfg: DictConfig, vlm: VLM, method: CalibrationMethod, samples: Sequence[Sample]
) -> list[tuple[Sample, int]]:
    """The samples whose prompt (as the method asks it) plus ``generation.max_new_tokens``
    exceed the model's context, with their prompt lengths in tokens."""
    context = context_length(vlm)
    if context is None or not samples:
        return []
    lengths = prompt_tokens(vlm, [method.conversation(s) for s in samples])
    budget = context - cfg.generation.max_new_tokens
    return [(s, n) for s, n in zip(samples, lengths, strict=True) if n > budget]


def drop_too_long(
    cfg: DictConfig, vlm: VLM, method: CalibrationMethod, splits: DataSplits
) -> DataSplits:
    """Validation and evaluation without the prompts longer than the model's context:
    ``data.on_too_long=skip`` drops them (counted in metrics.json under data.too_long),
    ``error`` stops. Never truncated: a cut prompt is another question."""
    over = {
        part: too_long(cfg, vlm, method, getattr(splits, part))
        for part in ("validation", "evaluation")
    }
    found = [(s, n) for pairs in over.values() for s, n in pairs]
    if not found:
        return splits
    context = context_length(vlm)
    examples = ", ".join(f"{s.id} ({n} tokens)" for s, n in found[:5])
    policy = OmegaConf.select(cfg, "data.on_too_long", default="error")
    if policy == "error":
        raise DataError(
            f"{len(found)} prompt(s) do not fit the model's context of {context} tokens with "
            f"generation.max_new_tokens={cfg.generation.max_new_tokens}: {examples}. Set "
            "data.on_too_long=skip to drop them (counted in metrics.json), lower "
            "generation.max_new_tokens, or use a model with a longer context"
        )
    log.warning(
        "skipped %d prompt(s) longer than the model's context (%d tokens with %d new): %s",
        len(found),
        context,
        cfg.generation.max_new_tokens,
        examples,
    )
    drop = {s.id for s, _ in found}
    info = {
        **splits.info,
        "too_long": {
            "skipped": len(found),
            "context": context,
            "max_new_tokens": cfg.generation.max_new_tokens,
            "ids": sorted(drop),
        },
    }
    return replace(
        splits,
        validation=[s for s in splits.validation if s.id not in drop],
        evaluation=[s for s in splits.evaluation if s.id not in drop],
        info=info,
    )


def response_rows(
    samples: Sequence[Sample],
    responses: Sequence[str],
    labels: Sequence[Label],
    judge: Judge | None = None,
) -> list[dict]:
    """The rows of ``responses.jsonl`` (a cascade judge adds both of its judges' labels)."""
    both = judge.last_report().per_sample() if hasattr(judge, "last_report") else {}
    return [
        {
            "id": s.id,
            "label": s.label,
            "category": s.category,
            "condition": s.condition,
            "prompt": s.prompt,
            "image": s.image,
            "response": r,
            "judge": lab.value,
            **{f"judge_{which}": value for which, value in both.get(s.id, {}).items()},
        }
        for s, r, lab in zip(samples, responses, labels, strict=True)
    ]
