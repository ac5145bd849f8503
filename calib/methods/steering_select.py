"""Choosing where to steer by the effect of steering, on the validation part.

Effect-based selection (Arditi et al. 2024, ``select_direction.py`` of
``andyrdt/refusal_direction``): every candidate (post-instruction position, layer) - layers in
the last ``skip_last`` fraction excluded - is scored with one forward pass per prompt, reading
the next-token distribution at the last prompt position:

* ``ablation_score``: mean refusal score (log-odds of the refusal tokens) on the unsafe
  validation prompts with the direction ablated at every layer - lower = ablation removes
  refusal better;
* ``actadd_score``: mean refusal score on the safe validation prompts with the raw mean
  difference added at the candidate layer's input - higher = the vector induces refusal;
* ``kl``: mean KL divergence of the safe prompts' next-token distribution under ablation from
  the unsteered one - how much ablation disturbs ordinary behaviour.

Candidates with ``kl > kl_max`` or ``actadd_score < min_actadd_score`` are dropped and the
lowest ablation score wins. When every candidate is dropped the filters are relaxed (first
``min_actadd_score``, then ``kl_max``), and ``selection.json`` says so.

The CAST condition (Lee et al. 2024, IBM ``activation-steering``) is chosen the way the
reference's ``find_best_condition_point`` does: per candidate layer, the similarity of every
labelled validation prompt and the threshold and comparison (``>`` or ``<``) with the best
F1 for "unsafe".
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from calib.errors import ConfigError
from calib.methods.steering_hooks import SteeringPlan, condition_similarity, installed
from calib.model import VLM
from calib.types import Conversation, Sample
from train.steering import SteeringVectors, candidate_layers, read_prompt_states

log = logging.getLogger(__name__)


def refusal_score(
    logits: torch.Tensor, tokens: Sequence[int], epsilon: float = 1e-8
) -> torch.Tensor:
    """log P(refusal token) - log P(any other token) at the last position, per row (float64)."""
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    refusal = probs[:, list(tokens)].sum(dim=-1)
    return torch.log(refusal + epsilon) - torch.log(1 - refusal + epsilon)


def kl_divergence(
    p_logits: torch.Tensor, q_logits: torch.Tensor, epsilon: float = 1e-6
) -> torch.Tensor:
    """KL(p || q) of the next-token distributions, per row (float64)."""
    p = torch.softmax(p_logits.to(torch.float64), dim=-1)
    q = torch.softmax(q_logits.to(torch.float64), dim=-1)
    return (p * (torch.log(p + epsilon) - torch.log(q + epsilon))).sum(dim=-1)


@torch.inference_mode()
def last_logits(
    vlm: VLM,
    conversations: Sequence[Conversation],
    batch_size: int,
    plan: SteeringPlan | None = None,
) -> torch.Tensor:
    """Next-token logits at the last prompt position, float32 CPU ``[n, vocab]``."""
    rows = []
    for start in range(0, len(conversations), batch_size):
        batch = vlm.encode(list(conversations[start : start + batch_size]))
        if plan is None:
            out = vlm.model(**batch, use_cache=False, logits_to_keep=1)
        else:
            with installed(plan, vlm):
                out = vlm.model(**batch, use_cache=False, logits_to_keep=1)
        rows.append(out.logits[:, -1, :].float().cpu())
    return torch.cat(rows)


def capped(samples: Sequence[Sample], label: str, limit: int, seed: int) -> list[Sample]:
    """Up to ``limit`` samples of ``label``, a seeded draw in a fixed order."""
    chosen = sorted((s for s in samples if s.label == label), key=lambda s: s.id)
    random.Random(seed).shuffle(chosen)
    return chosen[:limit]


def both_labels(
    validation: Sequence[Sample], limit: int, seed: int, needed_by: str, or_set: str
) -> tuple[list[Sample], list[Sample]]:
    """The capped unsafe and safe samples of the validation part; a ConfigError saying what
    needs them (``needed_by``) and what to set instead (``or_set``) when a side is empty."""
    unsafe = capped(validation, "unsafe", limit, seed)
    safe = capped(validation, "safe", limit, seed)
    if not unsafe or not safe:
        raise ConfigError(
            f"{needed_by}, which has {len(unsafe)} unsafe and {len(safe)} safe samples: give "
            f"it both (a larger data.limit or data.validation_fraction) or set {or_set}"
        )
    return unsafe, safe


def select_by_effect(
    vlm: VLM,
    vectors: SteeringVectors,
    validation: Sequence[Sample],
    *,
    conversation: Callable[[Sample], Conversation],
    refusal_tokens: Sequence[int],
    skip_last: float,
    kl_max: float,
    min_actadd_score: float | None,
    limit: int,
    batch_size: int,
    seed: int,
    min_layer: int = 0,
) -> dict[str, Any]:
    """Score every candidate (from ``min_layer`` on) on the validation part; the report of
    ``selection.json``.

    Raises:
        ConfigError: the validation part lacks unsafe or safe samples.
    """
    harmful, harmless = both_labels(
        validation,
        limit,
        seed,
        "method.layer=auto (layer_select=effect) selects on the validation part",
        "method.layer=<index> / method.layer_select=auroc",
    )
    harmful_chats = [conversation(s) for s in harmful]
    harmless_chats = [conversation(s) for s in harmless]
    base_harmful = refusal_score(last_logits(vlm, harmful_chats, batch_size), refusal_tokens)
    base_harmless_logits = last_logits(vlm, harmless_chats, batch_size)
    base_harmless = refusal_score(base_harmless_logits, refusal_tokens)
    n_positions = vectors.num_positions
    rows = []
    for layer in candidate_layers(vectors.num_layers, skip_last):
        if layer < min_layer:
            continue
        for p in range(n_positions):
            if not bool(vectors.directions[p, layer].any()):
                continue  # both sides agree here (a zero direction): nothing to steer
            ablate = SteeringPlan(
                mode="ablate", layer=layer, direction=vectors.directions[p, layer]
            )
            add = SteeringPlan(mode="add", layer=layer, vector=vectors.mean_diff[p, layer])
            ablated_harmless = last_logits(vlm, harmless_chats, batch_size, ablate)
            rows.append(
                {
                    "position": p - n_positions,
                    "layer": layer,
                    "ablation_score": _mean(
                        refusal_score(
                            last_logits(vlm, harmful_chats, batch_size, ablate), refusal_tokens
                        )
                    ),
                    "actadd_score": _mean(
                        refusal_score(
                            last_logits(vlm, harmless_chats, batch_size, add), refusal_tokens
                        )
                    ),
                    "kl": _mean(kl_divergence(base_harmless_logits, ablated_harmless)),
                }
            )
    chosen, relaxed = _choose(rows, kl_max, min_actadd_score)
    for row in rows:
        row["chosen"] = row is chosen
    return {
        "rule": "lowest ablation_score among candidates with kl <= kl_max and "
        "actadd_score >= min_actadd_score (Arditi et al. 2024)",
        "position": chosen["position"],
        "layer": chosen["layer"],
        "relaxed": relaxed,
        "kl_max": kl_max,
        "min_actadd_score": min_actadd_score,
        "skip_last": skip_last,
        "baseline": {"harmful_score": _mean(base_harmful), "harmless_score": _mean(base_harmless)},
        "validation_ids": sorted(s.id for s in [*harmful, *harmless]),
        "n_harmful": len(harmful),
        "n_harmless": len(harmless),
        "refusal_tokens": list(refusal_tokens),
        "candidates": rows,
    }


def _mean(values: torch.Tensor) -> float:
    return float(values.mean())


def _choose(rows: list[dict], kl_max: float, min_actadd: float | None) -> tuple[dict, str | None]:
    def passing(use_actadd: bool, use_kl: bool) -> list[dict]:
        return [
            r
            for r in rows
            if not any(math.isnan(r[k]) for k in ("ablation_score", "actadd_score", "kl"))
            and (not use_kl or r["kl"] <= kl_max)
            and (not use_actadd or min_actadd is None or r["actadd_score"] >= min_actadd)
        ]

    for use_actadd, use_kl, note in (
        (True, True, None),
        (False, True, "no candidate reached min_actadd_score: that filter was dropped"),
        (False, False, "no candidate passed kl_max either: both filters were dropped"),
    ):
        kept = passing(use_actadd, use_kl)
        if kept:
            if note:
                log.warning("steering selection: %s", note)
            return min(kept, key=lambda r: (r["ablation_score"], r["layer"], r["position"])), note
    raise ValueError("steering selection: every candidate scored NaN")


# --- CAST condition ------------------------------------------------------------------------


def best_f1_threshold(scores: torch.Tensor, positive: torch.Tensor) -> tuple[float, float, bool]:
    """The threshold and comparison (``above``: positive iff score > τ) with the best F1.

    τ is the midpoint of the gap where the cut falls; on ties the first best cut wins.
    """
    values, order = torch.sort(scores.to(torch.float64))
    flags = positive[order].to(torch.float64)
    n = values.numel()
    best = (-1.0, 0.0, True)
    total_pos = float(flags.sum())
    below_pos = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(flags, 0)])
    for k in range(n + 1):
        if 0 < k < n and values[k] == values[k - 1]:
            continue
        tau = (
            float(values[0]) - 1.0
            if k == 0
            else float(values[-1]) + 1.0
            if k == n
            else float(0.5 * (values[k - 1] + values[k]))
        )
        for above in (True, False):
            predicted = (n - k) if above else k
            true_pos = (total_pos - float(below_pos[k])) if above else float(below_pos[k])
            denominator = predicted + total_pos
            f1 = 0.0 if denominator == 0 else 2 * true_pos / denominator
            if f1 > best[0]:
                best = (f1, tau, above)
    return best[1], best[0], best[2]


def select_condition(
    vlm: VLM,
    vectors: SteeringVectors,
    validation: Sequence[Sample],
    *,
    conversation: Callable[[Sample], Conversation],
    max_layer: int,
    limit: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """The condition layer (``<= max_layer``, so the decision precedes the behaviour edit),
    threshold and comparison with the best F1 on the validation part."""
    unsafe, safe = both_labels(
        validation,
        limit,
        seed,
        "method.mode=conditional chooses its threshold on the validation part",
        "method.tau and method.condition_layer",
    )
    samples = [*unsafe, *safe]
    _, pooled = read_prompt_states(vlm, [conversation(s) for s in samples], batch_size, 1)
    positive = torch.tensor([s.label == "unsafe" for s in samples])
    rows = []
    for layer in range(max_layer + 1):
        states = pooled[:, layer, :].unsqueeze(1)  # [n, 1, hidden]: already mean-pooled
        similarity = condition_similarity(states, None, vectors.condition[layer])
        tau, f1, above = best_f1_threshold(similarity, positive)
        rows.append({"layer": layer, "tau": tau, "f1": f1, "above": above})
    chosen = max(rows, key=lambda r: (r["f1"], -r["layer"]))
    for row in rows:
        row["chosen"] = row is chosen
    return {
        "rule": "best F1 (unsafe = positive) over layers, thresholds and comparisons "
        "(IBM activation-steering find_best_condition_point)",
        "layer": chosen["layer"],
        "tau": chosen["tau"],
        "above": chosen["above"],
        "f1": chosen["f1"],
        "validation_ids": sorted(s.id for s in samples),
        "candidates": rows,
    }
