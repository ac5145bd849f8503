"""Scoring judged responses: the evaluation figures, the validation part's figures (what
sweeps optimise) and the deltas to the same model with no method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from calib.generation.cache import GenerationCache
from calib.methods.none import FINGERPRINT as BASELINE_FINGERPRINT
from calib.methods.none import NoMethod
from calib.model import VLM
from calib.pipeline.generate import generate_answers
from calib.types import (
    CalibrationMethod,
    Judge,
    Label,
    Sample,
    UtilitySet,
)
from eval.deltas import Baseline, deltas
from eval.metrics import safety_metrics
from eval.utility.base import score_utility


def score(
    cfg: DictConfig,
    samples: Sequence[Sample],
    labels: Sequence[Label],
    *,
    n_boot: int | None = None,
) -> dict[str, Any]:
    """Safety metrics of judged samples (bootstrap intervals as ``metrics.*`` says)."""
    return safety_metrics(
        samples,
        labels,
        n_boot=cfg.metrics.n_boot if n_boot is None else n_boot,
        seed=cfg.seed,
        confidence=cfg.metrics.confidence,
    )


VALIDATION_KEYS = ("sra_u", "sra_s", "sra_s_strict", "mean", "n_safe", "n_unsafe", "n_excluded")


def validation_figures(
    cfg: DictConfig,
    vlm: VLM,
    method: CalibrationMethod,
    judge: Judge,
    validation: Sequence[Sample],
    cache: GenerationCache | None,
) -> dict[str, Any]:
    """``metrics["validation"]``: the method's figures on the validation part, which
    sweeps optimise (no intervals: a selection criterion, not a report)."""
    if not validation:
        return {**dict.fromkeys(VALIDATION_KEYS), "n": 0}
    answers = generate_answers(cfg, vlm, method, validation, cache, progress=False)
    figures = score(cfg, validation, judge.label(validation, answers.responses), n_boot=0)
    return {**{k: figures[k] for k in VALIDATION_KEYS}, "n": len(validation)}


def is_baseline(method: CalibrationMethod) -> bool:
    """True when the method changes nothing (its outputs are the baseline's)."""
    return method.fingerprint() == BASELINE_FINGERPRINT


def baseline_figures(
    cfg: DictConfig,
    vlm: VLM,
    judge: Judge,
    samples: Sequence[Sample],
    utility_set: UtilitySet,
    utility_items: Sequence[Sample],
    cache: GenerationCache | None,
) -> Baseline:
    """The same model with no method, judged and scored like the run (cache first)."""
    everything = [*samples, *utility_items]
    generation = generate_answers(cfg, vlm, NoMethod(), everything, cache, progress=False)
    labels = judge.label(samples, generation.responses[: len(samples)])
    utility = None
    if utility_items:
        answers = generation.responses[len(samples) :]
        utility = score_utility(utility_set, utility_items, answers).summary
    return Baseline(
        score(cfg, samples, labels, n_boot=0), utility, generation.generated, generation.cached
    )


def deltas_to_baseline(
    cfg: DictConfig,
    vlm: VLM,
    method: CalibrationMethod,
    judge: Judge,
    samples: Sequence[Sample],
    utility_set: UtilitySet,
    utility_items: Sequence[Sample],
    metrics: dict[str, Any],
    cache: GenerationCache | None,
) -> dict[str, Any]:
    """This run minus the same model with ``method=none`` (its answers from the cache)."""
    if is_baseline(method):
        base = Baseline(metrics["safety"], metrics.get("utility"), generated=0, cached=0)
    else:
        base = baseline_figures(cfg, vlm, judge, samples, utility_set, utility_items, cache)
    return deltas(metrics["safety"], metrics.get("utility"), base)
