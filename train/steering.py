"""Steering directions from the calibration split: fit, score per layer, save and load.

For every decoder layer the residual stream (the layer's output) is read at the last prompt
token of each labelled calibration sample (:meth:`calib.model.VLM.hidden_states`). A layer's
direction is

* ``diff_of_means``: mean(unsafe) - mean(safe), summed in float64; or
* ``pca``: the first principal component of the paired differences (per group that holds
  both labels: mean(unsafe in group) - mean(safe in group)), taken without centring - the
  same as PCA over pairs presented in random order - with its sign fixed so that unsafe
  samples project higher.

Directions are unit vectors. Each layer is scored by how well the projection separates safe
from unsafe on a held-out part of the calibration split (AUROC; whole groups are held out),
and gets the threshold τ that maximises balanced accuracy on the calibration split (used by
conditional steering) and the mean norm of its residual stream (the unit of ``alpha``).
Everything is saved in one safetensors file with the metadata that made it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
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

FORMAT = "vsc-calib-steering/1"
DIRECTION_KINDS = ("diff_of_means", "pca")
TOKEN_POSITION = "last_prompt_token"
_TENSORS = ("directions", "mean_norms", "auroc", "thresholds", "threshold_accuracy")
_CHUNK = 256  # samples per float64 accumulation step (bounds the extra memory)


@dataclass(frozen=True)
class SteeringVectors:
    """One direction per decoder layer plus what steering needs to use it.

    Attributes:
        directions: ``[layers, hidden]`` float32 unit vectors (unsafe projects higher).
        mean_norms: ``[layers]`` mean residual-stream norm at the last prompt token.
        auroc: ``[layers]`` held-out AUROC of the projection (unsafe = positive class).
        thresholds: ``[layers]`` τ maximising balanced accuracy of ``projection > τ``.
        threshold_accuracy: ``[layers]`` that balanced accuracy on the calibration split.
        meta: strings saved as safetensors metadata (model identity, data hash, ...).
    """

    directions: torch.Tensor
    mean_norms: torch.Tensor
    auroc: torch.Tensor
    thresholds: torch.Tensor
    threshold_accuracy: torch.Tensor
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Fixed dtypes, so a fitted object and its reloaded copy are bit-identical.
        object.__setattr__(self, "directions", self.directions.detach().to(torch.float32).cpu())
        for name in _TENSORS[1:]:
            value = getattr(self, name).detach().to(torch.float64).cpu()
            object.__setattr__(self, name, value)

    @property
    def num_layers(self) -> int:
        return self.directions.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.directions.shape[1]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name).contiguous() for name in _TENSORS}
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
        missing = [name for name in _TENSORS if name not in tensors]
        if meta.get("format") != FORMAT or missing:
            raise ValueError(
                f"{key}={path} is not a steering-vector file of this project "
                f"(format={meta.get('format')!r}, missing tensors: {missing or 'none'})"
            )
        meta.pop("format")
        return cls(**{name: tensors[name] for name in _TENSORS}, meta=meta)

    def content_hash(self) -> str:
        """sha256 of the tensors (not of the metadata): names the vectors in fingerprints."""
        digest = hashlib.sha256()
        for name in _TENSORS:
            digest.update(name.encode())
            digest.update(getattr(self, name).numpy().tobytes())
        return digest.hexdigest()[:16]


# --- reading the residual stream ----------------------------------------------------------


def collect_states(
    vlm: VLM, conversations: Sequence[Conversation], batch_size: int
) -> torch.Tensor:
    """Residual stream of every decoder layer at the last prompt token: ``[n, layers, hidden]``."""
    chunks = [
        vlm.hidden_states(list(conversations[start : start + batch_size]))
        for start in range(0, len(conversations), batch_size)
    ]
    return torch.cat(chunks, dim=0)


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
    if (norms == 0).any():
        layers = torch.nonzero(norms.squeeze(-1) == 0).flatten().tolist()
        raise ValueError(
            f"steering direction is zero at layers {layers}: safe and unsafe calibration "
            "samples give identical residual streams there"
        )
    return raw / norms


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
    """Layers ``auto`` may pick: all but the last ``floor(skip_last * num_layers)`` (>= 1)."""
    return list(range(max(1, num_layers - math.floor(skip_last * num_layers))))


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
    states: torch.Tensor,
    is_unsafe: torch.Tensor,
    groups: Sequence[str],
    *,
    direction: str,
    holdout: float,
    seed: int,
    meta: dict[str, str] | None = None,
) -> SteeringVectors:
    """Fit, score and threshold every layer from states ``[n, layers, hidden]``."""
    fit_rows, held_rows, scored_on = holdout_split(groups, is_unsafe, holdout, seed)
    fit_groups = [groups[i] for i in fit_rows.tolist()]
    scoring = unit_directions(states[fit_rows], is_unsafe[fit_rows], fit_groups, direction)
    held_projections = project(states[held_rows], scoring)
    scores = torch.tensor(
        [
            auroc(held_projections[:, layer], is_unsafe[held_rows])
            for layer in range(states.shape[1])
        ]
    )
    directions = unit_directions(states, is_unsafe, groups, direction)
    projections = project(states, directions)
    cuts = [best_threshold(projections[:, layer], is_unsafe) for layer in range(states.shape[1])]
    info = {
        "direction": direction,
        "token_position": TOKEN_POSITION,
        "num_layers": str(states.shape[1]),
        "hidden_size": str(states.shape[2]),
        "n_unsafe": str(int(is_unsafe.sum())),
        "n_safe": str(int((~is_unsafe).sum())),
        "holdout": str(holdout),
        "seed": str(seed),
        "scored_on": scored_on,
        **(meta or {}),
    }
    return SteeringVectors(
        directions=directions,
        mean_norms=mean_norms(states),
        auroc=scores,
        thresholds=torch.tensor([tau for tau, _ in cuts], dtype=torch.float64),
        threshold_accuracy=torch.tensor([acc for _, acc in cuts], dtype=torch.float64),
        meta=info,
    )


def labelled(samples: Sequence[Sample]) -> list[Sample]:
    """The safe/unsafe samples; errors when one of the two labels is missing."""
    kept = [s for s in samples if s.label in ("safe", "unsafe")]
    n_unsafe = sum(s.label == "unsafe" for s in kept)
    if n_unsafe == 0 or n_unsafe == len(kept):
        raise ValueError(
            f"steering needs safe and unsafe calibration samples; the calibration split has "
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
) -> SteeringVectors:
    """Read the residual stream of the labelled calibration samples and fit every layer."""
    kept = labelled(samples)
    states = collect_states(vlm, [conversation(s) for s in kept], batch_size)
    is_unsafe = torch.tensor([s.label == "unsafe" for s in kept])
    meta = {
        "model_identity": vlm.identity,
        "model_name": vlm.name,
        "data_hash": samples_digest(kept),
    }
    return vectors_from_states(
        states,
        is_unsafe,
        [s.group for s in kept],
        direction=direction,
        holdout=holdout,
        seed=seed,
        meta=meta,
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
