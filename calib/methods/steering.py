"""Calibration by activation steering of the residual stream (README: "Steering").

Vectors (:mod:`train.steering`) are fitted on the fit part at every decoder layer's input;
where to steer is chosen on the validation part (:mod:`calib.methods.steering_select`); the
hooks (:mod:`calib.methods.steering_hooks`) live only inside :meth:`SteeringMethod.active`.

Modes (``method.mode``):

* ``add``: add ``alpha`` × the raw mean difference (``alpha_unit=diff``, the reference's
  activation addition at ``alpha=1``) or ``alpha`` × the layer's mean residual norm × the
  unit direction (``alpha_unit=norm``) at the chosen layer's input; ``alpha > 0`` toward
  refusal, ``< 0`` away from it;
* ``ablate``: project the unit direction out of every layer's input and every attention and
  MLP output (``ablate_layers=all``, Arditi et al.) or of the chosen layer's input only
  (``selected``); ``orthogonalize=true`` edits the weights instead (same logits, no hooks);
* ``conditional`` (CAST, Lee et al. 2024): the prompt's mean-pooled state at the condition
  layer is compared with a condition vector (unsafe vs safe); only when the condition holds
  is the behaviour (refusal) vector added, for the whole generation;
* ``bidirectional`` (the project's variant): the last prompt token's projection on the unit
  direction decides the sign: ``+alpha`` above τ, ``-alpha`` below.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calib.chat import default_conversation
from calib.errors import ConfigError, DataError
from calib.io import write_json_atomic
from calib.methods.none import base_answers
from calib.methods.refusals import refusal_templates
from calib.methods.steering_hooks import SteeringHooks, SteeringPlan, orthogonalized
from calib.methods.steering_select import select_by_effect, select_condition
from calib.model import VLM
from calib.model.answers import AssistantTurn, answer_tokens, assistant_turn
from calib.types import Conversation, Judge, Label, Sample
from train.steering import (
    DIRECTION_KINDS,
    SteeringVectors,
    candidate_layers,
    choose_layer,
    fit_vectors,
    write_layer_scores,
)

log = logging.getLogger(__name__)

MODES = ("add", "ablate", "conditional", "bidirectional")
POSITIONS = ("all", "prompt", "generated", "text_only")
SOURCES = ("auto", "behaviour", "label")
LAYER_SELECT = ("effect", "auroc")
ALPHA_UNITS = ("diff", "norm")
VECTORS_FILE = "steering_vectors.safetensors"
SELECTION_FILE = "selection.json"


class SteeringMethod:
    """Steers the residual stream along a refusal direction fitted on the fit part.

    Args (the keys of ``conf/method/steering.yaml``, documented there):
        mode, alpha, alpha_unit, layer, layer_select, positions, direction_source,
        ablate_layers, orthogonalize, tau, condition_layer, direction, vectors,
        allow_overlap, holdout, skip_last, kl_max, min_actadd_score, selection_samples,
        forward_batch_size, seed, judge, decoding, generate_batch_size, cache_dir.
    """

    def __init__(
        self,
        *,
        mode: str,
        alpha: float,
        layer: int | str,
        positions: str,
        tau: float | None,
        direction: str,
        vectors: str | None,
        holdout: float,
        skip_last: float,
        forward_batch_size: int,
        seed: int,
        alpha_unit: str = "diff",
        layer_select: str = "effect",
        direction_source: str = "auto",
        ablate_layers: str = "all",
        orthogonalize: bool = False,
        condition_layer: int | str = "auto",
        allow_overlap: bool = False,
        kl_max: float = 0.1,
        min_actadd_score: float | None = 0.0,
        selection_samples: int = 32,
        judge: Judge | None = None,
        decoding: Mapping[str, Any] | None = None,
        generate_batch_size: int = 8,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        problems = _config_problems(locals())
        if problems:
            raise ConfigError(problems)
        self.mode = mode
        self.alpha = float(alpha)
        self.alpha_unit = alpha_unit
        self.layer = layer
        self.layer_select = layer_select
        self.positions = positions
        self.direction_source = direction_source
        self.ablate_layers = ablate_layers
        self.orthogonalize = bool(orthogonalize)
        self.tau = None if tau is None else float(tau)
        self.condition_layer = condition_layer
        self.direction = direction
        self.vectors_path = None if vectors is None else Path(vectors)
        self.allow_overlap = bool(allow_overlap)
        self.holdout = float(holdout)
        self.skip_last = float(skip_last)
        self.kl_max = float(kl_max)
        self.min_actadd_score = None if min_actadd_score is None else float(min_actadd_score)
        self.selection_samples = selection_samples
        self.forward_batch_size = forward_batch_size
        self.seed = seed
        self.judge = judge
        self.decoding = dict(decoding or {"max_new_tokens": 64, "do_sample": False})
        self.generate_batch_size = generate_batch_size
        self.cache_dir = cache_dir
        self.vectors: SteeringVectors | None = None
        self.plan: SteeringPlan | None = None
        self.selection: dict[str, Any] = {}
        self._behaviour: dict[str, Any] = {}

    # --- fitting ----------------------------------------------------------------------

    def fit(
        self,
        vlm: VLM,
        samples: Sequence[Sample],
        workdir: Path,
        validation: Sequence[Sample] = (),
    ) -> None:
        """Fit (or load) the vectors on ``samples`` (the fit part), choose where to steer on
        ``validation``; write vectors, ``selection.json`` and layer scores into ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.vectors_path is not None:
            vectors = SteeringVectors.load(self.vectors_path)
            _check_compatible(vectors, vlm, self.vectors_path)
        else:
            sides, tokens = None, None
            if self.direction_source != "label":
                sides, tokens = self._behaviour_sides(vlm, samples)
            tokens = tokens or template_refusal_tokens(vlm)
            vectors = fit_vectors(
                vlm,
                samples,
                direction=self.direction,
                holdout=self.holdout,
                seed=self.seed,
                batch_size=self.forward_batch_size,
                conversation=self.conversation,
                sides=sides or None,
                meta={"refusal_tokens": json.dumps(tokens)},
            )
        vectors.save(workdir / VECTORS_FILE)
        self.select(vlm, vectors, validation)
        assert self.plan is not None
        if self.selection:
            write_json_atomic(workdir / SELECTION_FILE, self.selection)
        write_layer_scores(
            vectors, self.plan.layer, candidate_layers(vectors.num_layers, self.skip_last), workdir
        )
        if self.mode == "bidirectional":
            write_json_atomic(workdir / "threshold.json", self._threshold_report(vectors))
        log.info("steering: %s", self.describe())

    def _behaviour_sides(
        self, vlm: VLM, samples: Sequence[Sample]
    ) -> tuple[dict[str, bool], list[int]]:
        """The base model's own answers on the fit part, judged: unsafe samples it refused
        (REFUSE) are the refusal side, safe samples it complied with (COMPLY) the other."""
        if self.judge is None and self.direction_source == "auto":
            self._behaviour = {"used": "label (no judge)"}
            return {}, []
        if self.judge is None:
            raise ConfigError(
                "method.direction_source=behaviour needs method.judge (the run's judge: "
                "judge: ${judge} in conf/method/steering.yaml)"
            )
        kept, answers, labels = self._judged_base_answers(vlm, samples)
        sides: dict[str, bool] = {}
        refusals: list[str] = []
        complied: list[str] = []
        for sample, answer, label in zip(kept, answers, labels, strict=True):
            side = behaviour_side(sample, label)
            if side is not None:
                sides[sample.id] = side
                (refusals if side else complied).append(answer)
        counts = {
            "unsafe_refused": sum(sides.values()),
            "safe_complied": sum(not v for v in sides.values()),
            "unsafe": sum(s.label == "unsafe" for s in kept),
            "safe": sum(s.label == "safe" for s in kept),
            "unsafe_labels": dict(
                Counter(
                    lab.value for s, lab in zip(kept, labels, strict=True) if s.label == "unsafe"
                )
            ),
            "safe_labels": dict(
                Counter(lab.value for s, lab in zip(kept, labels, strict=True) if s.label == "safe")
            ),
        }
        self._behaviour = counts
        if counts["unsafe_refused"] == 0 or counts["safe_complied"] == 0:
            if self.direction_source == "auto":
                counts["used"] = "label (a side is empty)"
                log.warning(
                    "steering: the base model refused %d unsafe and complied with %d safe fit "
                    "samples, so the direction is unsafe vs safe (direction_source=label)",
                    counts["unsafe_refused"],
                    counts["safe_complied"],
                )
                return {}, []
            raise DataError(
                f"method.direction_source=behaviour: the base model refused "
                f"{counts['unsafe_refused']} of {counts['unsafe']} unsafe fit samples "
                f"(judged {counts['unsafe_labels']}) and complied with {counts['safe_complied']} "
                f"of {counts['safe']} safe ones (judged {counts['safe_labels']}); both sides need "
                "samples. Use method.direction_source=label, a larger fit part, or a model "
                "that refuses."
            )
        counts["used"] = "behaviour"
        return sides, answer_refusal_tokens(vlm, refusals, complied)

    def select(self, vlm: VLM, vectors: SteeringVectors, validation: Sequence[Sample]) -> None:
        """Choose position, layer (and CAST's condition) and build the plan."""
        num_layers = vlm.num_layers
        self.selection = {}
        position = vectors.num_positions - 1  # the last post-instruction token
        condition: dict[str, Any] | None = None
        condition_first = (
            self.mode == "conditional"
            and self.layer == "auto"
            and self.layer_select == "effect"
            and self.condition_layer == "auto"
        )
        if self.layer != "auto":
            if not 0 <= int(self.layer) < num_layers:
                raise ConfigError(
                    f"method.layer={self.layer} is out of range: model has {num_layers} decoder "
                    f"layers (0..{num_layers - 1}); pick one in range or method.layer=auto"
                )
            layer = int(self.layer)
        elif self.layer_select == "auroc":
            layer = choose_layer(vectors.auroc, self.skip_last)
            self.selection["layer"] = {"rule": "best held-out AUROC", "layer": layer}
        else:
            if condition_first:
                # CAST chooses its condition point on its own (find_best_condition_point);
                # the behaviour layer then comes at or after it, so the condition is read
                # before the vector is added.
                last = candidate_layers(num_layers, self.skip_last)[-1]
                condition = self._condition(vlm, vectors, validation, last)
            report = select_by_effect(
                vlm,
                vectors,
                self._selection_side(vlm, validation),
                conversation=self.conversation,
                refusal_tokens=json.loads(vectors.meta.get("refusal_tokens", "null"))
                or template_refusal_tokens(vlm),
                skip_last=self.skip_last,
                kl_max=self.kl_max,
                min_actadd_score=self.min_actadd_score,
                limit=self.selection_samples,
                batch_size=self.forward_batch_size,
                seed=self.seed,
                min_layer=int(condition["layer"]) if condition else 0,
            )
            layer, position = report["layer"], vectors.num_positions + report["position"]
            self.selection["layer"] = report
        if self.mode == "conditional":
            if condition is None:
                condition = self._condition(vlm, vectors, validation, layer)
            self.selection["condition"] = condition
        if self._behaviour:
            self.selection["behaviour"] = self._behaviour
        self.use_vectors(vectors, num_layers, layer=layer, position=position, condition=condition)

    def _judged_base_answers(
        self, vlm: VLM, samples: Sequence[Sample]
    ) -> tuple[list[Sample], list[str], list[Label]]:
        """The labelled samples, the base model's answers to them (cached) and the judge's
        labels of those answers."""
        assert self.judge is not None
        kept = [s for s in samples if s.label in ("safe", "unsafe")]
        answers = base_answers(
            vlm,
            kept,
            batch_size=self.generate_batch_size,
            decoding=self.decoding,
            cache_dir=self.cache_dir,
        )
        return kept, answers, self.judge.label(kept, answers) if kept else []

    def _selection_side(self, vlm: VLM, validation: Sequence[Sample]) -> list[Sample]:
        """The validation samples layer selection scores. With a behaviour direction, as the
        reference: unsafe ones the base model refuses and safe ones it complies with (judged),
        so the KL filter is not measured on safe prompts the model refuses, which ablating the
        refusal direction rightly changes. All of them with a label direction, or when a
        judged side has fewer than two samples."""
        if self._behaviour.get("used") != "behaviour":
            return list(validation)
        kept, _, labels = self._judged_base_answers(vlm, validation)
        judged = zip(kept, labels, strict=True)
        side = [s for s, lab in judged if behaviour_side(s, lab) is not None]
        counts = Counter(s.label for s in side)
        self._behaviour["validation"] = dict(counts)
        return side if min(counts["unsafe"], counts["safe"]) >= 2 else list(validation)

    def _condition(
        self, vlm: VLM, vectors: SteeringVectors, validation: Sequence[Sample], layer: int
    ) -> dict[str, Any]:
        if self.tau is not None and self.condition_layer != "auto":
            return {
                "layer": int(self.condition_layer),
                "tau": self.tau,
                "above": True,
                "rule": "method.tau and method.condition_layer (similarity > tau)",
            }
        report = select_condition(
            vlm,
            vectors,
            validation,
            conversation=self.conversation,
            max_layer=layer if self.condition_layer == "auto" else int(self.condition_layer),
            limit=self.selection_samples,
            batch_size=self.forward_batch_size,
            seed=self.seed,
        )
        if self.condition_layer != "auto":
            row = report["candidates"][int(self.condition_layer)]
            report.update(layer=row["layer"], tau=row["tau"], above=row["above"], f1=row["f1"])
        if self.tau is not None:
            report.update(tau=self.tau, rule=report["rule"] + "; tau from method.tau")
        return report

    def use_vectors(
        self,
        vectors: SteeringVectors,
        num_layers: int,
        *,
        layer: int | None = None,
        position: int | None = None,
        condition: Mapping[str, Any] | None = None,
    ) -> None:
        """Build the plan from ``vectors`` (``fit`` calls this; tests and calib-bench may too).

        Without ``layer`` it uses ``method.layer`` (an index) or the best AUROC; without
        ``position`` the last post-instruction token; a conditional plan without
        ``condition`` reads at the steered layer with ``method.tau`` (default 0).
        """
        if layer is None:
            layer = (
                choose_layer(vectors.auroc, self.skip_last)
                if self.layer == "auto"
                else int(self.layer)
            )
        if not 0 <= layer < num_layers:
            raise ConfigError(
                f"method.layer={layer} is out of range: model has {num_layers} decoder layers "
                f"(0..{num_layers - 1}); pick one in range or method.layer=auto"
            )
        p = vectors.num_positions - 1 if position is None else position
        unit = vectors.directions[p, layer]
        if not bool(unit.any()):
            raise ConfigError(
                f"method.layer={layer}: the two sides of the fit part give the same residual "
                "stream at this layer's input (a zero direction; layer 0 reads the template's "
                "embeddings), so there is nothing to steer: pick a later layer or method.layer=auto"
            )
        if self.alpha_unit == "diff":
            vector = self.alpha * vectors.mean_diff[p, layer]
        else:
            vector = self.alpha * float(vectors.mean_norms[layer]) * unit
        tau, cond_layer, above, cond_vector = None, None, True, None
        if self.mode == "bidirectional":
            tau = self.tau if self.tau is not None else float(vectors.thresholds[layer])
        if self.mode == "conditional":
            condition = dict(condition or {"layer": layer, "tau": self.tau or 0.0, "above": True})
            cond_layer, tau, above = (
                int(condition["layer"]),
                float(condition["tau"]),
                condition["above"],
            )
            cond_vector = vectors.condition[cond_layer]
            if cond_layer > layer:
                raise ConfigError(
                    f"method.condition_layer={cond_layer} comes after the steered layer {layer}: "
                    "the condition must be read before the behaviour vector is added"
                )
        self.vectors = vectors
        self.plan = SteeringPlan(
            mode=self.mode,
            layer=layer,
            positions=self.positions,
            vector=vector,
            direction=unit,
            ablate_layers=self.ablate_layers,
            scale=float(vector.norm()),
            tau=tau,
            condition=cond_vector,
            condition_layer=cond_layer,
            condition_above=bool(above),
        )
        self._position = p

    def _threshold_report(self, vectors: SteeringVectors) -> dict:
        assert self.plan is not None
        layer = self.plan.layer
        from_data = self.tau is None
        return {
            "layer": layer,
            "tau": self.plan.tau,
            "source": "fit part (max balanced accuracy)" if from_data else "method.tau",
            "balanced_accuracy": float(vectors.threshold_accuracy[layer]) if from_data else None,
            "n_refusal_side": vectors.meta.get("n_refusal_side"),
            "n_other_side": vectors.meta.get("n_other_side"),
        }

    def describe(self) -> str:
        assert self.plan is not None
        return (
            f"mode {self.mode}, layer {self.plan.layer}, position {self._position}, "
            f"alpha {self.alpha:g} ({self.alpha_unit}), positions {self.positions}, "
            f"source {self.vectors.meta.get('direction_source') if self.vectors else '?'}"
        )

    def trained_on(self) -> set[str]:
        """Ids of the samples the vectors were fitted on (the run refuses an overlap with its
        evaluation split unless ``method.allow_overlap=true``)."""
        return set(self.vectors.fit_ids()) if self.vectors is not None else set()

    def report(self) -> dict[str, Any]:
        """``metrics.json``'s ``method``: where it steers and how that was chosen."""
        if self.plan is None:
            return {}
        out: dict[str, Any] = {
            "mode": self.mode,
            "layer": self.plan.layer,
            "position": self._position,
            "direction_source": self.vectors.meta.get("direction_source") if self.vectors else None,
        }
        if "layer" in self.selection and "relaxed" in self.selection["layer"]:
            out["selection_relaxed"] = self.selection["layer"]["relaxed"]
        if self.plan.mode == "conditional":
            out.update(condition_layer=self.plan.condition_layer, tau=self.plan.tau)
        if self._behaviour:
            out["behaviour"] = {
                k: self._behaviour[k]
                for k in ("used", "unsafe_refused", "safe_complied")
                if k in self._behaviour
            }
        return out

    # --- generation -------------------------------------------------------------------

    def conversation(self, sample: Sample) -> Conversation:
        return default_conversation(sample)

    @contextmanager
    def active(self, vlm: VLM) -> Iterator[None]:
        """Hooks (or orthogonalised weights) for the block's duration, undone in ``finally``."""
        if self.plan is None:
            raise RuntimeError("SteeringMethod.active() before fit(): fit or use_vectors first")
        if self.orthogonalize:
            with orthogonalized(vlm, self.plan.direction):
                yield
            return
        hooks = SteeringHooks(self.plan, vlm)
        self.hooks = hooks
        try:
            hooks.install()
            yield
        finally:
            hooks.remove()

    def fingerprint(self) -> str:
        if self.plan is None or self.vectors is None:
            raise RuntimeError("SteeringMethod.fingerprint() before fit()")
        plan = self.plan
        parts = [
            f"vectors={self.vectors.content_hash()}",
            f"layer={plan.layer}",
            f"position={self._position}",
            f"mode={self.mode}",
            f"positions={self.positions}",
        ]
        if self.mode == "ablate":
            parts.append(f"ablate_layers={self.ablate_layers};orthogonalize={self.orthogonalize}")
        else:
            parts.append(f"alpha={self.alpha!r};unit={self.alpha_unit}")
        if self.mode in ("bidirectional", "conditional"):
            parts.append(f"tau={plan.tau!r}")
        if self.mode == "conditional":
            parts.append(f"condition_layer={plan.condition_layer};above={plan.condition_above}")
        return "steering:" + hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


# --- refusal tokens ------------------------------------------------------------------------


def first_token(vlm: VLM, text: str, turn: AssistantTurn | None = None) -> int | None:
    """The first token the model would write to start ``text`` after the generation prompt
    (with the space a template such as ``ASSISTANT: {answer}`` puts before it)."""
    ids = answer_tokens(vlm, text.strip(), turn or assistant_turn(vlm))
    return ids[0] if ids else None


def behaviour_side(sample: Sample, label: Label) -> bool | None:
    """A sample's side of the behaviour direction: True for an unsafe one the model refused,
    False for a safe one it complied with, None otherwise (left out)."""
    if sample.label == "unsafe" and label == Label.REFUSE:
        return True
    if sample.label == "safe" and label == Label.COMPLY:
        return False
    return None


#: Openings of helpful answers: a refusal token that also starts these says nothing.
COMPLIANT_OPENINGS = ("Sure", "Here", "Yes", "Certainly", "Of course", "To", "The", "You", "It")


def answer_refusal_tokens(
    vlm: VLM, refusals: Sequence[str], complied: Sequence[str] = (), most: int = 8
) -> list[int]:
    """The first tokens of the base model's own refusals, most frequent first, without those
    that also open its complied answers (a byte-level tokenizer may start both "Sorry" and
    "Sure" with a bare space token; scoring that token would score both alike)."""
    turn = assistant_turn(vlm)
    helpful = {first_token(vlm, c, turn) for c in complied}
    counts = Counter(t for t in (first_token(vlm, r, turn) for r in refusals) if t is not None)
    distinct = [token for token, _ in counts.most_common() if token not in helpful]
    return (distinct or [token for token, _ in counts.most_common()])[:most]


def template_refusal_tokens(vlm: VLM) -> list[int]:
    """The first tokens of the project's refusal texts (``calib.methods.refusals``) and of
    common refusal openings - the reference's hand-picked ``refusal_toks`` - without the
    first tokens of common helpful openings."""
    texts = [*refusal_templates().values(), "I'm sorry", "Sorry", "I cannot", "As an AI"]
    turn = assistant_turn(vlm)
    helpful = {first_token(vlm, x, turn) for x in COMPLIANT_OPENINGS}
    tokens = {t for t in (first_token(vlm, x, turn) for x in texts) if t is not None}
    return sorted(tokens - helpful) or sorted(tokens)


# --- config checks --------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _config_problems(cfg: Mapping[str, Any]) -> list[str]:
    problems = []
    choices = {
        "mode": MODES,
        "positions": POSITIONS,
        "direction_source": SOURCES,
        "layer_select": LAYER_SELECT,
        "alpha_unit": ALPHA_UNITS,
        "ablate_layers": ("all", "selected"),
        "direction": DIRECTION_KINDS,
    }
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            problems.append(f"method.{key}={cfg[key]!r} must be one of {', '.join(allowed)}")
    if not _number(cfg["alpha"]):
        problems.append(f"method.alpha={cfg['alpha']!r} must be a number")
    for key in ("layer", "condition_layer"):
        value = cfg[key]
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"method.{key}={value!r} must be a decoder-layer index or auto")
    if cfg["tau"] is not None and not _number(cfg["tau"]):
        problems.append(
            f"method.tau={cfg['tau']!r} must be a number or null (chosen on validation)"
        )
    if not 0 <= cfg["holdout"] < 1:
        problems.append(f"method.holdout={cfg['holdout']} must be in [0, 1)")
    if not 0 <= cfg["skip_last"] < 1:
        problems.append(f"method.skip_last={cfg['skip_last']} must be in [0, 1)")
    if not _number(cfg["kl_max"]) or cfg["kl_max"] < 0:
        problems.append(f"method.kl_max={cfg['kl_max']!r} must be a number >= 0")
    if cfg["min_actadd_score"] is not None and not _number(cfg["min_actadd_score"]):
        problems.append(
            f"method.min_actadd_score={cfg['min_actadd_score']!r} must be a number or null"
        )
    for key in ("forward_batch_size", "selection_samples", "generate_batch_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            problems.append(f"method.{key}={cfg[key]!r} must be a positive integer")
    if cfg["orthogonalize"] and (
        cfg["mode"] != "ablate" or cfg["ablate_layers"] != "all" or cfg["positions"] != "all"
    ):
        problems.append(
            "method.orthogonalize=true edits the weights, which is ablation at every layer and "
            f"position: it needs method.mode=ablate (got {cfg['mode']}), method.ablate_layers=all "
            f"(got {cfg['ablate_layers']}) and method.positions=all (got {cfg['positions']})"
        )
    return problems


def _check_compatible(vectors: SteeringVectors, vlm: VLM, path: Path) -> None:
    problems = []
    if vectors.num_layers != vlm.num_layers or vectors.hidden_size != vlm.hidden_size:
        problems.append(
            f"method.vectors={path} holds {vectors.num_layers} layers x {vectors.hidden_size} "
            f"dims but the model has {vlm.num_layers} x {vlm.hidden_size}: fit vectors for "
            "this model (method.vectors=null)"
        )
    identity = vectors.meta.get("model_identity")
    if not problems and identity != vlm.identity:
        log.warning(
            "steering: %s was fitted on model %s, now applied to %s", path, identity, vlm.identity
        )
    if problems:
        raise ConfigError(problems)
