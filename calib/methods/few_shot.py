"""Calibration by few-shot demonstrations taken from the calibration split.

Each query is preceded by ``method.k`` demonstrations — prior user/assistant turns with
their images — half of them unsafe (answered with a short refusal that names the reason,
:func:`calib.methods.refusals.refusal_target`) and half safe (answered with the data's
reference answer when it has one, else with the base model's *own* answer, generated once
with no method, cached, and shown only when the run's judge finds it helpful:
:mod:`calib.methods.targets`), so the demonstrations teach calibration — refuse the
hazardous query, answer its safe look-alike — rather than blanket refusal. An odd ``k``
gets one more safe demonstration than unsafe ones.

Demonstrations come only from the samples given to :meth:`FewShotMethod.fit` (the fit part
of the calibration split). ``fit`` draws a seeded *pool* of at most ``method.pool_size`` safe and
as many unsafe candidates, spread over categories and query groups; each query then picks
from the pool by ``method.selection``:

- ``random``: the same seeded demonstrations for every query (the first of the pool).
- ``same_category``: candidates of the query's topic first, then the rest of the pool. The
  topic is the sample's label-free ``meta["family"]`` when the data gives one (VSCBench's
  text-centric category is the XSTest type, and ``contrast_*`` types *are* the label: the
  family of ``homonyms`` and ``contrast_homonyms`` is ``homonyms``), else its category.
- ``similar``: the candidates whose query text is most similar to the query's, by the
  Jaccard index of their sets of lower-cased word tokens (``|A ∩ B| / |A ∪ B|``); ties keep
  pool order, so the choice is deterministic.

A query from the same group as a calibration sample (the sample itself or its safe/unsafe
twin) means the splits overlap, and raises an error rather than risk leaking an answer. The chosen
demonstrations are shuffled per query with a seed derived from ``method.seed`` and the
query's id, so neither label always comes last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calib.chat import image_part, text_part, user_turn
from calib.errors import ConfigError
from calib.io import write_jsonl_atomic
from calib.methods.refusals import refusal_target, refusal_templates
from calib.methods.targets import check_policy, safe_targets
from calib.model import VLM
from calib.types import Conversation, Judge, Message, Sample

log = logging.getLogger("calib.methods.few_shot")

SELECTIONS = ("random", "same_category", "similar")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Demonstration:
    """One calibration sample with the answer the model is shown for it."""

    sample: Sample
    answer: str
    source: str  # "refusal", "reference", "base_model" or "template"


def words(text: str) -> frozenset[str]:
    """The set of lower-cased word tokens of a text."""
    return frozenset(_WORD.findall(text.lower()))


def family(sample: Sample) -> str:
    """The sample's topic without its label: ``meta["family"]``, else its category."""
    return str(sample.meta.get("family") or sample.category).lower()


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """``|a ∩ b| / |a ∪ b|``; 0.0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def spread(samples: Sequence[Sample], seed: str) -> list[Sample]:
    """A seeded order that cycles over categories, and within a category over query groups.

    The first items of the result therefore cover as many categories and groups as possible.
    """
    by_category: dict[str, dict[str, list[Sample]]] = {}
    for sample in sorted(samples, key=lambda s: s.id):
        by_category.setdefault(sample.category, {}).setdefault(sample.group, []).append(sample)
    category_orders = []
    for category in sorted(by_category):
        groups = [by_category[category][g] for g in sorted(by_category[category])]
        rng = random.Random(f"{seed}:{category}")
        rng.shuffle(groups)
        for members in groups:
            rng.shuffle(members)
        category_orders.append(_round_robin(groups))
    return _round_robin(category_orders)


def _round_robin(lists: Sequence[Sequence[Sample]]) -> list[Sample]:
    longest = max((len(items) for items in lists), default=0)
    return [items[i] for i in range(longest) for items in lists if i < len(items)]


class FewShotMethod:
    """Prepends ``k`` balanced demonstrations from the calibration split to every query.

    Args:
        k: demonstrations per query (``k // 2`` unsafe, the rest safe).
        selection: ``random``, ``same_category`` or ``similar`` (see the module docstring).
        with_images: show the demonstrations' images; false gives text-only demonstrations
            for models that take one image per conversation.
        seed: seeds the pool, the random choice and the order of demonstrations.
        pool_size: most candidates drawn per label (safe / unsafe) from the calibration
            split; the base model answers every safe one once. None = all.
        use_references: answer a safe demonstration with the data's reference answer when
            it has one (instead of the base model's answer).
        refusals: per-category refusal texts, merged over
            :data:`calib.methods.refusals.DEFAULT_REFUSAL_TEMPLATES`.
        generate_batch_size: prompts per batch when the base model answers candidates.
        decoding: decoding settings for those answers (``max_new_tokens``, ``do_sample``,
            ``temperature``, ``top_p``, ``seed``).
        cache_dir: where generated answers are cached (the run's generation cache).
        judge: judges the base model's answers; only helpful ones are shown as they are.
        safe_target: what to do with an unhelpful base answer (:mod:`calib.methods.targets`):
            ``drop`` the candidate, ``base_if_helpful`` (show ``safe_template`` instead) or
            ``template`` (always show the template).
        safe_template: the helpful answer shown in place of an unhelpful one.
    """

    def __init__(
        self,
        k: int,
        selection: str,
        with_images: bool,
        seed: int,
        pool_size: int | None,
        use_references: bool,
        refusals: Mapping[str, str],
        generate_batch_size: int,
        decoding: Mapping[str, Any],
        cache_dir: str | None,
        judge: Judge,
        safe_target: str,
        safe_template: str | None,
    ) -> None:
        problems = check_policy(safe_target, safe_template)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            problems.append(f"method.k={k!r} must be an integer >= 1 (use method=none for zero)")
        if selection not in SELECTIONS:
            problems.append(
                f"method.selection={selection!r} must be one of {', '.join(SELECTIONS)}"
            )
        if pool_size is not None and (not isinstance(pool_size, int) or pool_size < 1):
            problems.append(
                f"method.pool_size={pool_size!r} must be an integer >= 1, or null for all"
            )
        if not isinstance(generate_batch_size, int) or generate_batch_size < 1:
            problems.append(
                f"method.generate_batch_size={generate_batch_size!r} must be an integer >= 1"
            )
        try:
            self.refusals = refusal_templates(refusals)
        except ValueError as err:
            problems.append(f"method.refusals: {err}")
        if problems:
            raise ConfigError(problems)
        self.k = k
        self.selection = selection
        self.with_images = with_images
        self.seed = seed
        self.pool_size = pool_size
        self.use_references = use_references
        self.generate_batch_size = generate_batch_size
        self.decoding = dict(decoding)
        self.cache_dir = cache_dir
        self.judge = judge
        self.safe_target = safe_target
        self.safe_template = safe_template
        self._safe_counts: Counter[str] = Counter()
        self.n_unsafe = k // 2
        self.n_safe = k - self.n_unsafe
        self._pools: dict[str, list[Demonstration]] | None = None
        self._words: dict[str, frozenset[str]] = {}
        self._groups: dict[str, str] = {}

    # --- fit ----------------------------------------------------------------------------

    def check_data(self, fit: Sequence[Sample], validation: Sequence[Sample] = ()) -> None:
        """Before the model loads: does the fit part hold ``k`` demonstrations, and may the
        pool hold them? One fix is given, the split first (the pool cannot exceed it)."""
        counts = {label: sum(s.label == label for s in fit) for label in ("safe", "unsafe")}
        needed = {"safe": self.n_safe, "unsafe": self.n_unsafe}
        short = [f"{counts[label]} {label}" for label in needed if counts[label] < needed[label]]
        if short:
            most = 2 * min(counts["safe"], counts["unsafe"]) + (counts["safe"] > counts["unsafe"])
            raise ConfigError(
                f"method.k={self.k} needs {self.n_safe} safe and {self.n_unsafe} unsafe "
                f"demonstrations but the fit part of the calibration split has only "
                f"{' and '.join(short)}: lower method.k (at most {most} here) or give the "
                "calibration split more samples (data.calibration_fraction, data.limit)"
            )
        if self.pool_size is not None and self.pool_size < self.n_safe:
            raise ConfigError(
                f"method.pool_size={self.pool_size} is smaller than the {self.n_safe} safe "
                f"demonstrations method.k={self.k} needs: raise method.pool_size to at least "
                f"{self.n_safe} (or null for all), or lower method.k"
            )

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Draws the candidate pool from ``samples`` (the calibration split) and answers it."""
        self.check_data(samples)
        candidates = {
            label: spread([s for s in samples if s.label == label], f"{self.seed}:{label}")
            for label in ("safe", "unsafe")
        }
        unsafe = candidates["unsafe"][: self.pool_size]
        safe = candidates["safe"][: self.pool_size]
        fixed = self.selection == "random"  # every query gets the same first ones
        if fixed:
            unsafe = unsafe[: self.n_unsafe]
        demos = [Demonstration(s, refusal_target(s, self.refusals), "refusal") for s in unsafe]
        demos_safe = self._answer_safe(vlm, safe, self.n_safe if fixed else None)
        if len(demos_safe) < self.n_safe:
            raise ConfigError(
                f"method.k={self.k} needs {self.n_safe} safe demonstrations but the base model "
                f"gave a helpful answer (judged COMPLY) to only {len(demos_safe)} of "
                f"{len(safe)} candidates ({dict(self._safe_counts)}): raise method.pool_size, "
                "set method.safe_target=base_if_helpful (a helpful template instead), or lower "
                "method.k"
            )
        self._groups = {s.group: s.id for s in samples}  # queries must not share one
        self._pools = {"safe": demos_safe, "unsafe": demos}
        self._words = {d.sample.id: words(d.sample.prompt) for d in demos + demos_safe}
        if self.with_images and any(d.sample.image is not None for d in demos + demos_safe):
            self._check_several_images(vlm, [d.sample for d in demos + demos_safe])
        rows = [
            {"id": d.sample.id, "label": d.sample.label, "category": d.sample.category,
             "prompt": d.sample.prompt, "image": d.sample.image, "answer": d.answer,
             "source": d.source}
            for d in demos + demos_safe
        ]  # fmt: skip
        write_jsonl_atomic(Path(workdir) / "demonstrations.jsonl", rows)

    def _answer_safe(
        self, vlm: VLM, samples: Sequence[Sample], wanted: int | None
    ) -> list[Demonstration]:
        """The first ``wanted`` (None: all) safe candidates that get a non-empty answer."""
        demos: list[Demonstration] = []
        start = 0
        while start < len(samples) and (wanted is None or len(demos) < wanted):
            size = len(samples) if wanted is None else wanted - len(demos)
            demos += self._answer(vlm, samples[start : start + size])
            start += size
        return demos

    def _answer(self, vlm: VLM, samples: Sequence[Sample]) -> list[Demonstration]:
        """Candidates with their answers: the reference, else the base model's answer when
        the judge finds it helpful (:mod:`calib.methods.targets` decides about the others)."""
        with_reference = {s.id: s.reference for s in samples if self.use_references and s.reference}
        to_generate = [s for s in samples if s.id not in with_reference]
        targets = safe_targets(
            vlm,
            to_generate,
            judge=self.judge,
            policy=self.safe_target,
            template=self.safe_template,
            batch_size=self.generate_batch_size,
            decoding=self.decoding,
            cache_dir=self.cache_dir,
        )
        counts = targets.counts(len(to_generate))
        self._safe_counts.update({k: counts[k] for k in ("kept", "replaced", "dropped")})
        self._safe_counts["reference"] += len(with_reference)
        demos = []
        for sample in samples:
            if sample.id in with_reference:
                demos.append(Demonstration(sample, with_reference[sample.id], "reference"))
            elif sample.id in targets.answers:
                answer, source = targets.answers[sample.id], targets.sources[sample.id]
                demos.append(Demonstration(sample, answer, source))
            else:
                log.info(
                    "few_shot: base answer to %s judged %s; not shown (method.safe_target=drop)",
                    sample.id,
                    targets.judged.get(sample.id),
                )
        return demos

    def report(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``method``: how the safe answers were chosen."""
        return {"safe_targets": {"policy": self.safe_target, **dict(self._safe_counts)}}

    def _check_several_images(self, vlm: VLM, samples: Sequence[Sample]) -> None:
        """Runs one two-image conversation through the model; a clear error if it cannot."""
        images = [s.image for s in samples if s.image is not None][:1] * 2
        probe = [
            {"role": "user", "content": [image_part(images[0]), text_part("first")]},
            {"role": "assistant", "content": [text_part("ok")]},
            {"role": "user", "content": [image_part(images[1]), text_part("second")]},
        ]
        try:
            vlm.hidden_states([probe], layers=[0])
        except Exception as err:
            raise ConfigError(
                f"method.k={self.k} with images needs several images in one conversation, "
                f"but model {vlm.name} cannot take them ({type(err).__name__}: {err}). "
                "Set method.with_images=false for text-only demonstrations."
            ) from err

    # --- the conversation ---------------------------------------------------------------

    def demonstrations(self, sample: Sample) -> list[Demonstration]:
        """The demonstrations shown before ``sample``, in the order they are shown."""
        if self._pools is None:
            raise RuntimeError("FewShotMethod needs fit(vlm, calibration_samples, workdir) first")
        if sample.group in self._groups:
            raise ValueError(
                f"sample {sample.id} shares query group {sample.group!r} with calibration "
                f"sample {self._groups[sample.group]}: queries must come from the evaluation "
                "split and demonstrations from the calibration split, which never share a group"
            )
        chosen = [
            *self._pick(self._pools["unsafe"], sample, self.n_unsafe),
            *self._pick(self._pools["safe"], sample, self.n_safe),
        ]
        random.Random(f"{self.seed}:order:{sample.id}").shuffle(chosen)
        return chosen

    def _pick(self, pool: Sequence[Demonstration], sample: Sample, n: int) -> list[Demonstration]:
        usable = list(pool)
        if self.selection == "same_category":
            topic = family(sample)
            usable.sort(key=lambda d: family(d.sample) != topic)  # stable
        elif self.selection == "similar":
            query = words(sample.prompt)
            usable.sort(key=lambda d: -jaccard(query, self._words[d.sample.id]))  # stable
        return usable[:n]

    def conversation(self, sample: Sample) -> Conversation:
        messages: list[Message] = []
        for demo in self.demonstrations(sample):
            turn = user_turn(demo.sample)
            if not self.with_images:
                turn = {"role": "user", "content": [text_part(demo.sample.prompt)]}
            messages += [turn, {"role": "assistant", "content": [text_part(demo.answer)]}]
        return [*messages, user_turn(sample)]

    def active(self, vlm: VLM) -> AbstractContextManager[None]:
        return nullcontext()

    def fingerprint(self) -> str:
        """A hash of every setting and of the candidate demonstrations with their answers."""
        if self._pools is None:
            raise RuntimeError(
                "FewShotMethod.fingerprint() needs fit() first (it covers the demonstrations)"
            )
        payload = {
            "method": "few_shot",
            "k": self.k,
            "selection": self.selection,
            "with_images": self.with_images,
            "seed": self.seed,
            "pool_size": self.pool_size,
            "use_references": self.use_references,
            "refusals": self.refusals,
            "decoding": self.decoding,
            "safe_target": self.safe_target,
            "safe_template": self.safe_template,
            "pool": [
                [d.sample.id, d.sample.label, d.sample.category, d.sample.group,
                 d.sample.prompt, d.sample.image, d.answer]
                for label in ("unsafe", "safe")
                for d in self._pools[label]
            ],
        }  # fmt: skip
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"few_shot-k{self.k}-{self.selection}-{digest[:16]}"
