"""Which examples LoRA calibration trains on, built from the calibration split.

Each calibration sample becomes one prompt -> completion example (the prompt is the sample
as the model is asked it, :func:`calib.chat.default_conversation`):

- ``refusal``: an *unsafe* sample's completion is a short refusal that names the reason, the
  same per-category text few-shot uses (:func:`calib.methods.refusals.refusal_target`);
- ``self``: a *safe* sample's completion is the base model's own greedy answer to it
  (:func:`calib.methods.none.base_answers`, generated once with no method and cached) when
  the run's judge finds it helpful, so the adapter learns to keep answering look-alike safe
  queries (self-distillation) instead of learning blanket refusal; an unhelpful one is
  dropped or replaced by a helpful template (``template``), as ``method.safe_target`` says
  (:mod:`calib.methods.targets`): an over-refusal is never taught as the right answer;
- ``utility``: optional utility items (``method.utility_mix``) with their reference answers.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calib.chat import default_conversation
from calib.methods.refusals import refusal_target
from calib.methods.targets import SafeTargets, safe_targets
from calib.model.vlm import VLM
from calib.types import Judge, Sample
from train.lora_data import TrainingExample

log = logging.getLogger("calib.methods.lora")

KINDS = ("refusal", "self", "template", "utility")


def safety_examples(
    samples: Sequence[Sample],
    targets: SafeTargets,
    refusals: Mapping[str, str] | None = None,
) -> list[TrainingExample]:
    """Refusals for unsafe samples; for safe ones, the answer ``targets`` chose (the base
    model's own when helpful, or the template); safe samples it dropped are left out.

    Args:
        samples: the fit part of the calibration split (every sample labelled).
        targets: the safe samples' answers (:func:`calib.methods.targets.safe_targets`).
        refusals: per-category overrides of the refusal templates (``method.refusals``).

    Raises:
        ValueError: a sample has no safety label.
    """
    examples = []
    for sample in samples:
        if sample.label == "unsafe":
            kind, completion = "refusal", refusal_target(sample, refusals)
        elif sample.label == "safe":
            if sample.id not in targets.answers:
                continue  # its base answer was unhelpful and method.safe_target=drop
            source = targets.sources[sample.id]
            kind = "self" if source == "base_model" else "template"
            completion = targets.answers[sample.id]
        else:
            raise ValueError(
                f"calibration sample {sample.id!r} has label={sample.label!r}: LoRA targets need "
                "every calibration sample labelled 'safe' or 'unsafe' (check the data loader)"
            )
        examples.append(TrainingExample(sample.id, kind, default_conversation(sample), completion))
    return examples


def utility_examples(
    items: Sequence[Sample], n_safety: int, utility_mix: float, seed: int
) -> list[TrainingExample]:
    """``round(utility_mix * n_safety)`` utility items (seeded draw) answered with their reference.

    Raises:
        ValueError: ``utility_mix`` > 0 but there are no items, or an item has no reference.
    """
    wanted = round(utility_mix * n_safety)
    if wanted == 0:
        return []
    missing = [item.id for item in items if not str(item.reference or "").strip()]
    if missing:
        raise ValueError(
            f"method.utility_source gave {len(missing)} item(s) without a reference answer "
            f"(e.g. {missing[0]!r}); utility training needs a gold answer for every item"
        )
    usable = list(items)
    if not usable:
        raise ValueError(
            f"method.utility_mix={utility_mix} asks for {wanted} utility examples but "
            "method.utility_source has no items: set method.utility_source or utility_mix=0"
        )
    if wanted > len(usable):
        log.warning(
            "method.utility_mix=%s asks for %d utility examples; the source has %d, using all",
            utility_mix,
            wanted,
            len(usable),
        )
    chosen = random.Random(seed).sample(usable, min(wanted, len(usable)))
    return [
        TrainingExample(item.id, "utility", default_conversation(item), str(item.reference).strip())
        for item in chosen
    ]


def build_examples(
    vlm: VLM,
    samples: Sequence[Sample],
    *,
    refusals: Mapping[str, str] | None,
    judge: Judge,
    safe_target: str,
    safe_template: str | None,
    decoding: dict[str, Any],
    batch_size: int,
    cache_dir: str | Path | None,
    utility_items: Sequence[Sample] = (),
    utility_mix: float = 0.0,
    seed: int = 0,
) -> tuple[list[TrainingExample], dict[str, Any]]:
    """The full training set (safety examples + utility mix) and the safe-target counts.

    Args:
        vlm: the base model (no method active) that answers the safe samples.
        samples: the fit part of the calibration split.
        refusals: per-category refusal template overrides.
        judge: judges the base answers of safe samples (:mod:`calib.methods.targets`).
        safe_target: ``drop`` | ``base_if_helpful`` | ``template`` for unhelpful answers.
        safe_template: the helpful answer taught in place of an unhelpful one.
        decoding: ``vlm.generate`` settings for the base answers (greedy by default).
        batch_size: prompts per generation batch.
        cache_dir: generation cache folder (shared with ``method=none`` runs); None = no cache.
        utility_items: utility items with references to mix in.
        utility_mix: utility examples per safety example (0 = none).
        seed: seeds the draw of utility items.
    """
    if not samples:
        raise ValueError(
            "the calibration split is empty: LoRA needs calibration samples to train on "
            "(raise data.calibration_fraction, or pass method.adapter=<trained adapter>)"
        )
    safe = [s for s in samples if s.label == "safe"]
    targets = safe_targets(
        vlm,
        safe,
        judge=judge,
        policy=safe_target,
        template=safe_template,
        batch_size=batch_size,
        decoding=decoding,
        cache_dir=cache_dir,
    )
    examples = safety_examples(samples, targets, refusals)
    examples += utility_examples(utility_items, len(examples), utility_mix, seed)
    counts = {"policy": safe_target, **targets.counts(len(safe))}
    log.info(
        "LoRA training examples: %s; safe targets: %s",
        dict(Counter(e.kind for e in examples)),
        counts,
    )
    return examples, counts
