"""Steering vectors from the fit part: read the residual stream, fit, score, save and load.

What is read (as Arditi et al. 2024, ``andyrdt/refusal_direction``): the residual stream at
the **input** of every decoder layer (the stream before the block), at the **post-instruction
positions** - the chat template's tokens after the user's text (e.g. Gemma's
``<end_of_turn> <start_of_turn>model``), found by rendering a probe conversation - and, for
the CAST condition vector, the mean over every real prompt position (mean-pooled prompt, as IBM's
``activation-steering``).

Two sides define the refusal direction (``method.direction_source``):

* ``behaviour``: unsafe samples the base model *refused* (judged REFUSE) against safe samples
  it *complied* with (judged COMPLY) - a refusal direction, as the reference;
* ``label``: unsafe against safe samples - an "unsafe input" direction (the project's variant).

Per post-instruction position and layer the raw difference of means (refusal side minus the
other, float64 sums) is kept for activation addition, and its unit vector (or, with
``method.direction=pca``, the first principal component of per-group paired differences)
for ablation. At the last position each layer also gets a held-out AUROC of the projection,
a threshold τ of best balanced accuracy (bidirectional steering) and its mean residual norm.
The condition vector (CAST) is the difference of the mean-pooled prompts, unsafe minus safe.
Everything is saved in one safetensors file with the ids of the samples it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from calib.chat import default_conversation
from calib.hashing import samples_digest
from calib.io import write_json_atomic
from calib.types import Conversation, Sample

if TYPE_CHECKING:
    from calib.model import VLM

log = logging.getLogger(__name__)

FORMAT = "vsc-calib-steering/2"
DIRECTION_KINDS = ("diff_of_means", "pca")
TOKEN_POSITION = "layer_input@post_instruction"
_TENSORS = ("directions", "mean_norms", "auroc", "thresholds", "threshold_accuracy")
_EXTRA = ("mean_diff", "condition")  # float32 like directions
PROBE_TEXT = "vsc-calib-probe-instruction"
_CHUNK = 256  # samples per float64 accumulation step (bounds the extra memory)


@dataclass(frozen=True)
class SteeringVectors:
    """Refusal directions per post-instruction position and layer, plus what steering needs.

    Attributes:
        directions: ``[positions, layers, hidden]`` float32 unit vectors (refusal side higher).
        mean_norms: ``[layers]`` mean residual-stream norm at the last position's layer input.
        auroc: ``[layers]`` held-out AUROC of the last position's projection (refusal side =
            positive class).
        thresholds: ``[layers]`` τ maximising balanced accuracy of ``projection > τ``.
        threshold_accuracy: ``[layers]`` that balanced accuracy on the fit part.
        mean_diff: ``[positions, layers, hidden]`` float32 raw difference of means (what
            activation addition adds at ``alpha=1``).
        condition: ``[layers, hidden]`` float32 CAST condition vector (mean-pooled prompt,
            unsafe minus safe).
        meta: strings saved as safetensors metadata (model identity, fit ids, ...).
    """

    directions: torch.Tensor
    mean_norms: torch.Tensor
    auroc: torch.Tensor
    thresholds: torch.Tensor
    threshold_accuracy: torch.Tensor
    mean_diff: torch.Tensor
    condition: torch.Tensor
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Fixed dtypes, so a fitted object and its reloaded copy are bit-identical.
        for name in ("directions", *_EXTRA):
            value = getattr(self, name).detach().to(torch.float32).cpu().clone()
            object.__setattr__(self, name, value)
        for name in _TENSORS[1:]:
            value = getattr(self, name).detach().to(torch.float64).cpu()
            object.__setattr__(self, name, value)
        if self.directions.ndim != 3 or self.mean_diff.shape != self.directions.shape:
            raise ValueError(
                "SteeringVectors: directions and mean_diff must both be [positions, layers, "
                f"hidden], got {tuple(self.directions.shape)} and {tuple(self.mean_diff.shape)}"
            )

    @property
    def num_positions(self) -> int:
        return self.directions.shape[0]

    @property
    def num_layers(self) -> int:
        return self.directions.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.directions.shape[2]

    def fit_ids(self) -> list[str]:
        """Ids of the samples the vectors were fitted on (empty when not recorded)."""
        return list(json.loads(self.meta.get("fit_ids", "[]")))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name).contiguous() for name in (*_TENSORS, *_EXTRA)}
        save_file(tensors, str(path), metadata={"format": FORMAT, **self.meta})

    @classmethod
    def load(cls, path: Path, key: str = "method.vectors") -> SteeringVectors:
        """Load vectors saved by :meth:`save`; errors name ``key`` and the file."""
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{key}={path} does not exist: point it at a steering_vectors.safetensors "
                "written by an earlier run (<run>/method/), or set it to null to fit anew"
            )
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        tensors = load_file(str(path))
        missing = [name for name in (*_TENSORS, *_EXTRA) if name not in tensors]
        if meta.get("format") != FORMAT or missing:
            raise ValueError(
                f"{key}={path} is not a steering-vector file of this version "
                f"(format={meta.get('format')!r}, expected {FORMAT!r}; missing tensors: "
                f"{missing or 'none'}): fit the vectors anew with {key}=null"
            )
        meta.pop("format")
        return cls(**{name: tensors[name] for name in (*_TENSORS, *_EXTRA)}, meta=meta)

    def content_hash(self) -> str:
        """sha256 of the tensors (not of the metadata): names the vectors in fingerprints."""
        digest = hashlib.sha256()
        for name in (*_TENSORS, *_EXTRA):
            digest.update(name.encode())
            digest.update(getattr(self, name).numpy().tobytes())
        return digest.hexdigest()[:16]


# --- reading the residual stream ----------------------------------------------------------


def post_instruction_length(vlm: VLM) -> int:
    """How many template tokens follow the user's text (at least 1), as the reference's
    ``eoi_toks``: a probe conversation is rendered and the text after the probe tokenised."""
    probe = [{"role": "user", "content": [{"type": "text", "text": PROBE_TEXT}]}]
    rendered = vlm.render([probe])[0]
    if PROBE_TEXT not in rendered:
        return 1
    suffix = rendered.split(PROBE_TEXT, 1)[1]
    return max(1, len(vlm.tokenizer(suffix, add_special_tokens=False)["input_ids"]))


def layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a decoder layer is called with (first argument or keyword)."""
    return args[0] if args else kwargs["hidden_states"]


@torch.inference_mode()
def read_prompt_states(
    vlm: VLM, conversations: Sequence[Conversation], batch_size: int, n_positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream at every decoder layer's input for each conversation.

    Returns:
        ``post``: float32 ``[n, n_positions, layers, hidden]`` at the last ``n_positions``
        prompt positions (the post-instruction tokens; prompts are left-padded), and
        ``pooled``: float32 ``[n, layers, hidden]``, the mean over every real prompt position.
    """
    posts, pools = [], []
    for start in range(0, len(conversations), batch_size):
        post, pooled = _read_batch(vlm, conversations[start : start + batch_size], n_positions)
        posts.append(post)
        pools.append(pooled)
    return torch.cat(posts), torch.cat(pools)


def _read_batch(
    vlm: VLM, conversations: Sequence[Conversation], n_positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = vlm.encode(list(conversations))
    real = batch["attention_mask"].to(torch.float32).unsqueeze(-1)  # [b, t, 1]
    post: dict[int, torch.Tensor] = {}
    pooled: dict[int, torch.Tensor] = {}

    def reader(index: int):
        def hook(_module, args, kwargs):
            hidden = layer_input(args, kwargs).detach().to(torch.float32)
            weights = real.to(hidden.device)
            post[index] = hidden[:, -n_positions:, :].cpu()
            pooled[index] = ((hidden * weights).sum(1) / weights.sum(1)).cpu()

        return hook

    layers = vlm.decoder_layers
    handles = [
        layer.register_forward_pre_hook(reader(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    try:
        vlm.model(**batch, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return (
        torch.stack([post[i] for i in range(len(layers))], dim=2),
        torch.stack([pooled[i] for i in range(len(layers))], dim=1),
    )


# --- directions -------------------------------------------------------------------------


def class_means(states: torch.Tensor, is_unsafe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 means ``[layers, hidden]`` of the unsafe and the safe rows, summed in chunks."""
    sums = torch.zeros(2, *states.shape[1:], dtype=torch.float64)
    for start in range(0, states.shape[0], _CHUNK):
        chunk = states[start : start + _CHUNK].to(torch.float64)
        flags = is_unsafe[start : start + _CHUNK]
        sums[0] += chunk[flags].sum(dim=0)
        sums[1] += chunk[~flags].sum(dim=0)
    n_unsafe = int(is_unsafe.sum())
    return sums[0] / n_unsafe, sums[1] / (is_unsafe.numel() - n_unsafe)


def diff_of_means(states: torch.Tensor, is_unsafe: torch.Tensor) -> torch.Tensor:
    """mean(unsafe) - mean(safe) per layer, float64 ``[layers, hidden]`` (not normalised)."""
    unsafe, safe = class_means(states, is_unsafe)
    return unsafe - safe


def paired_differences(
    states: torch.Tensor, is_unsafe: torch.Tensor, groups: Sequence[str]
) -> torch.Tensor:
    """Per group holding both labels: mean(unsafe) - mean(safe), ``[pairs, layers, hidden]``.

    Groups are taken in sorted order, so the result does not depend on the sample order.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    diffs = []
    for group in sorted(members):
        rows = torch.tensor(members[group])
        flags = is_unsafe[rows]
        if flags.any() and not flags.all():
            group_states = states[rows].to(torch.float64)
            diffs.append(group_states[flags].mean(0) - group_states[~flags].mean(0))
    if not diffs:
        raise ValueError(
            "method.direction=pca needs pairs: calibration groups holding both a safe and an "
            "unsafe sample, and there are none. Use method.direction=diff_of_means."
        )
    return torch.stack(diffs)


def paired_pca(
    states: torch.Tensor, is_unsafe: torch.Tensor, groups: Sequence[str]
) -> torch.Tensor:
    """First principal component of the paired differences per layer, sign: unsafe higher."""
    diffs = paired_differences(states, is_unsafe, groups)  # [pairs, layers, hidden]
    components = []
    for layer in range(diffs.shape[1]):
        matrix = diffs[:, layer, :]
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        component = vh[0]
        if (matrix @ component).mean() < 0:
            component = -component
        components.append(component)
    return torch.stack(components)


def unit_directions(
    states: torch.Tensor, is_unsafe: torch.Tensor, groups: Sequence[str], kind: str
) -> torch.Tensor:
    """Unit directions ``[layers, hidden]`` (float64) of the given kind."""
    if kind not in DIRECTION_KINDS:
        raise ValueError(f"method.direction={kind!r} must be one of {', '.join(DIRECTION_KINDS)}")
    raw = (
        diff_of_means(states, is_unsafe)
        if kind == "diff_of_means"
        else paired_pca(states, is_unsafe, groups)
    )
    norms = raw.norm(dim=-1, keepdim=True)
    if (norms == 0).all():
        raise ValueError(
            "steering direction is zero at every layer: the two sides of the fit part give "
            "identical residual streams"
        )
    # A layer where both sides agree (e.g. layer 0 at template tokens: same embeddings) keeps
    # a zero direction; selection skips it.
    return raw / norms.clamp(min=torch.finfo(torch.float64).tiny)


def project(states: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """float64 projections ``[n, layers]`` of each row's state on its layer's direction."""
    directions = directions.to(torch.float64)
    parts = [
        torch.einsum("nlh,lh->nl", states[start : start + _CHUNK].to(torch.float64), directions)
        for start in range(0, states.shape[0], _CHUNK)
    ]
    return torch.cat(parts, dim=0)


def mean_norms(states: torch.Tensor) -> torch.Tensor:
    """Mean L2 norm of the residual stream per layer, float64 ``[layers]``."""
    total = torch.zeros(states.shape[1], dtype=torch.float64)
    for start in range(0, states.shape[0], _CHUNK):
        total += states[start : start + _CHUNK].to(torch.float64).norm(dim=-1).sum(dim=0)
    return total / states.shape[0]


# --- scoring and thresholds -------------------------------------------------------------


def auroc(scores: torch.Tensor, is_unsafe: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for unsafe vs safe (ties count one half)."""
    positive, negative = scores[is_unsafe], scores[~is_unsafe]
    if positive.numel() == 0 or negative.numel() == 0:
        return math.nan
    greater = (positive[:, None] > negative[None, :]).to(torch.float64).mean()
    equal = (positive[:, None] == negative[None, :]).to(torch.float64).mean()
    return float(greater + 0.5 * equal)


def best_threshold(projections: torch.Tensor, is_unsafe: torch.Tensor) -> tuple[float, float]:
    """τ maximising the balanced accuracy of "unsafe iff projection > τ", and that accuracy.

    τ is the midpoint of the gap where the cut falls (the first best cut on ties).
    """
    values, order = torch.sort(projections.to(torch.float64))
    flags = is_unsafe[order].to(torch.float64)
    n_unsafe, n_safe = flags.sum(), (1 - flags).sum()
    # Cut k puts sorted rows [0, k) below τ (safe) and [k, n) above (unsafe), k = 0..n.
    zero = torch.zeros(1, dtype=torch.float64)
    safe_below = torch.cat([zero, torch.cumsum(1 - flags, 0)])
    unsafe_below = torch.cat([zero, torch.cumsum(flags, 0)])
    balanced = 0.5 * ((n_unsafe - unsafe_below) / n_unsafe + safe_below / n_safe)
    n = values.numel()
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = values[1:] > values[:-1]  # a cut between equal values is not a cut
    balanced = torch.where(valid, balanced, torch.full_like(balanced, -1.0))
    k = int(torch.argmax(balanced))
    if k == 0:
        tau = float(values[0]) - 1.0
    elif k == n:
        tau = float(values[-1]) + 1.0
    else:
        tau = float(0.5 * (values[k - 1] + values[k]))
    return tau, float(balanced[k])


def candidate_layers(num_layers: int, skip_last: float) -> list[int]:
    """Layers ``auto`` may pick: the reference's ``layer < int(n * (1 - skip_last))`` (>= 1)."""
    return list(range(max(1, int(num_layers * (1.0 - skip_last)))))


def choose_layer(scores: torch.Tensor, skip_last: float) -> int:
    """The candidate layer with the highest AUROC (the shallowest on ties)."""
    candidates = candidate_layers(scores.numel(), skip_last)
    values = torch.nan_to_num(scores.to(torch.float64)[candidates], nan=-math.inf)
    return candidates[int(torch.argmax(values))]


def holdout_split(
    groups: Sequence[str], is_unsafe: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Row indices (fit, held out) with whole groups held out, and how layers were scored.

    Falls back to scoring in-sample (both index sets = all rows) when ``fraction`` is 0 or
    when a side would miss a label; the returned note says which happened.
    """
    everything = torch.arange(len(groups))
    if fraction <= 0:
        return everything, everything, "in_sample (method.holdout=0)"
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    held_names = set(names[: max(1, round(fraction * len(names)))])
    held = torch.tensor([g in held_names for g in groups])
    for side in (held, ~held):
        labels = is_unsafe[side]
        if labels.numel() == 0 or labels.all() or not labels.any():
            log.warning("steering: too few calibration groups to hold out; layers scored in-sample")
            return everything, everything, "in_sample (too few groups to hold out)"
    return everything[~held], everything[held], f"held_out ({int(held.sum())} samples)"


# --- fitting ----------------------------------------------------------------------------


def vectors_from_states(
    post: torch.Tensor,
    pooled: torch.Tensor,
    refusal_side: torch.Tensor,
    in_sides: torch.Tensor,
    is_unsafe: torch.Tensor,
    groups: Sequence[str],
    *,
    direction: str,
    holdout: float,
    seed: int,
    meta: dict[str, str] | None = None,
) -> SteeringVectors:
    """Fit every position and layer from states read by :func:`read_prompt_states`.

    Args:
        post: ``[n, positions, layers, hidden]``; pooled: ``[n, layers, hidden]``.
        refusal_side: per row, True on the refusal side (used where ``in_sides``).
        in_sides: per row, whether it belongs to one of the two sides of the direction.
        is_unsafe: per row, the data's label (the CAST condition vector's contrast).
        groups: per row, the query group (held-out scoring and ``pca`` pairs).
    """
    rows = torch.nonzero(in_sides).flatten()
    side_states = post[rows]
    flags = refusal_side[rows]
    side_groups = [groups[i] for i in rows.tolist()]
    n_positions = post.shape[1]
    mean_diff = torch.stack([diff_of_means(side_states[:, p], flags) for p in range(n_positions)])
    directions = torch.stack(
        [
            unit_directions(side_states[:, p], flags, side_groups, direction)
            for p in range(n_positions)
        ]
    )
    last = side_states[:, -1]  # [n, layers, hidden]: the last post-instruction position
    fit_rows, held_rows, scored_on = holdout_split(side_groups, flags, holdout, seed)
    fit_groups = [side_groups[i] for i in fit_rows.tolist()]
    scoring = unit_directions(last[fit_rows], flags[fit_rows], fit_groups, direction)
    held_projections = project(last[held_rows], scoring)
    scores = torch.tensor(
        [auroc(held_projections[:, layer], flags[held_rows]) for layer in range(last.shape[1])]
    )
    projections = project(last, directions[-1].to(torch.float64))
    cuts = [best_threshold(projections[:, layer], flags) for layer in range(last.shape[1])]
    condition = diff_of_means(pooled, is_unsafe)
    info = {
        "direction": direction,
        "token_position": TOKEN_POSITION,
        "num_positions": str(n_positions),
        "num_layers": str(post.shape[2]),
        "hidden_size": str(post.shape[3]),
        "n_refusal_side": str(int(flags.sum())),
        "n_other_side": str(int((~flags).sum())),
        "n_unsafe": str(int(is_unsafe.sum())),
        "n_safe": str(int((~is_unsafe).sum())),
        "holdout": str(holdout),
        "seed": str(seed),
        "scored_on": scored_on,
        **(meta or {}),
    }
    return SteeringVectors(
        directions=directions,
        mean_norms=mean_norms(last),
        auroc=scores,
        thresholds=torch.tensor([tau for tau, _ in cuts], dtype=torch.float64),
        threshold_accuracy=torch.tensor([acc for _, acc in cuts], dtype=torch.float64),
        mean_diff=mean_diff,
        condition=condition,
        meta=info,
    )


def labelled(samples: Sequence[Sample]) -> list[Sample]:
    """The safe/unsafe samples; errors when one of the two labels is missing."""
    kept = [s for s in samples if s.label in ("safe", "unsafe")]
    n_unsafe = sum(s.label == "unsafe" for s in kept)
    if n_unsafe == 0 or n_unsafe == len(kept):
        raise ValueError(
            f"steering needs safe and unsafe samples in the fit part; it has "
            f"{n_unsafe} unsafe and {len(kept) - n_unsafe} safe. Give the data config a "
            "calibration split (see conf/data/) or load saved vectors with method.vectors=<path>."
        )
    return kept


def fit_vectors(
    vlm: VLM,
    samples: Sequence[Sample],
    *,
    direction: str,
    holdout: float,
    seed: int,
    batch_size: int,
    conversation: Callable[[Sample], Conversation] = default_conversation,
    sides: Mapping[str, bool] | None = None,
    meta: Mapping[str, str] | None = None,
) -> SteeringVectors:
    """Read the residual stream of the labelled fit samples and fit every position and layer.

    Args:
        sides: sample id -> True (refusal side) / False (other side) for the refusal
            direction (``direction_source=behaviour``); samples not in it are used only for
            the condition vector. None = by label (unsafe = refusal side).
        meta: extra metadata to save (e.g. the refusal tokens).
    """
    kept = labelled(samples)
    n_positions = post_instruction_length(vlm)
    post, pooled = read_prompt_states(vlm, [conversation(s) for s in kept], batch_size, n_positions)
    is_unsafe = torch.tensor([s.label == "unsafe" for s in kept])
    if sides is None:
        refusal_side, in_sides = is_unsafe.clone(), torch.ones_like(is_unsafe)
        source = "label"
    else:
        refusal_side = torch.tensor([bool(sides.get(s.id, False)) for s in kept])
        in_sides = torch.tensor([s.id in sides for s in kept])
        source = "behaviour"
    info = {
        "model_identity": vlm.identity,
        "model_name": vlm.name,
        "data_hash": samples_digest(kept),
        "direction_source": source,
        "fit_ids": json.dumps(sorted(s.id for s in kept)),
        **(meta or {}),
    }
    return vectors_from_states(
        post,
        pooled,
        refusal_side,
        in_sides,
        is_unsafe,
        [s.group for s in kept],
        direction=direction,
        holdout=holdout,
        seed=seed,
        meta=info,
    )


# --- report -----------------------------------------------------------------------------


def write_layer_scores(
    vectors: SteeringVectors, chosen: int, candidates: Sequence[int], folder: Path
) -> dict[str, Any]:
    """Write ``layer_scores.json`` (AUROC, τ, norm per layer) into ``folder``.

    The run draws it as ``plots/steering_layers.png`` (:func:`eval.plots.steering_layer_plot`).
    """
    rows = [
        {
            "layer": layer,
            "auroc": _finite(vectors.auroc[layer]),
            "tau": float(vectors.thresholds[layer]),
            "tau_balanced_accuracy": float(vectors.threshold_accuracy[layer]),
            "mean_norm": float(vectors.mean_norms[layer]),
            "candidate": layer in candidates,
        }
        for layer in range(vectors.num_layers)
    ]
    report = {"chosen_layer": chosen, "scored_on": vectors.meta.get("scored_on"), "layers": rows}
    write_json_atomic(folder / "layer_scores.json", report)
    return report


def _finite(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number
