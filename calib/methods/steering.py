"""Calibration by activation steering of one decoder layer's residual stream.

Modes (``method.mode``):

* ``add``: add ``alpha * mean_norm * v`` (``v`` the unit direction, ``mean_norm`` the layer's
  mean residual-stream norm on the calibration split): ``alpha > 0`` pushes toward refusal
  (against undersafety), ``alpha < 0`` away from it (against oversafety);
* ``ablate``: project ``v`` out of the residual stream;
* ``conditional``: read each prompt's projection on ``v`` at the last prompt token of the
  steered layer; above τ add ``+alpha * mean_norm * v``, below it ``-alpha * mean_norm * v``.

Positions (``method.positions``): ``all`` steers every prompt and generated token;
``generated`` steers the positions that produce new tokens - the last prompt token and each
generated token. Padding is never touched. Hooks live only inside :meth:`active`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from calib.chat import default_conversation
from calib.errors import ConfigError
from calib.io import write_json_atomic
from calib.model import VLM
from calib.types import Conversation, Sample
from train.steering import (
    DIRECTION_KINDS,
    SteeringVectors,
    candidate_layers,
    choose_layer,
    fit_vectors,
    write_layer_scores,
)

log = logging.getLogger(__name__)

MODES = ("add", "ablate", "conditional")
POSITIONS = ("all", "generated")
VECTORS_FILE = "steering_vectors.safetensors"


@dataclass(frozen=True)
class SteeringPlan:
    """What the hooks do, resolved after fitting."""

    layer: int
    direction: torch.Tensor  # [hidden] float32 unit vector
    scale: float  # alpha * mean residual norm of the layer
    mode: str
    positions: str
    tau: float | None  # conditional only


class SteeringMethod:
    """Steers one decoder layer along a safety direction fitted on the calibration split.

    Args:
        mode: ``add`` | ``ablate`` | ``conditional``.
        alpha: strength in units of the layer's mean residual-stream norm.
        layer: decoder layer index, or ``"auto"`` (best held-out AUROC among the candidates).
        positions: ``all`` | ``generated``.
        tau: conditional threshold; None = the one maximising balanced accuracy on the
            calibration split.
        direction: ``diff_of_means`` | ``pca``.
        vectors: path of saved vectors to load instead of fitting; None = fit.
        holdout: fraction of calibration groups held out to score layers.
        skip_last: fraction of the final layers ``auto`` never picks.
        forward_batch_size: prompts per forward pass when reading the residual stream.
        seed: seeds the held-out split.
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
    ) -> None:
        problems = _config_problems(
            mode, alpha, layer, positions, tau, direction, holdout, skip_last, forward_batch_size
        )
        if problems:
            raise ConfigError(problems)
        self.mode = mode
        self.alpha = float(alpha)
        self.layer = layer
        self.positions = positions
        self.tau = None if tau is None else float(tau)
        self.direction = direction
        self.vectors_path = None if vectors is None else Path(vectors)
        self.holdout = float(holdout)
        self.skip_last = float(skip_last)
        self.forward_batch_size = forward_batch_size
        self.seed = seed
        self.vectors: SteeringVectors | None = None
        self.plan: SteeringPlan | None = None

    # --- fitting ----------------------------------------------------------------------

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Fit (or load) the vectors, choose the layer and τ; write them into ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.vectors_path is not None:
            vectors = SteeringVectors.load(self.vectors_path)
            _check_compatible(vectors, vlm, self.vectors_path)
        else:
            vectors = fit_vectors(
                vlm,
                samples,
                direction=self.direction,
                holdout=self.holdout,
                seed=self.seed,
                batch_size=self.forward_batch_size,
                conversation=self.conversation,
            )
        vectors.save(workdir / VECTORS_FILE)
        self.use_vectors(vectors, vlm.num_layers)
        assert self.plan is not None
        write_layer_scores(
            vectors, self.plan.layer, candidate_layers(vectors.num_layers, self.skip_last), workdir
        )
        if self.mode == "conditional":
            write_json_atomic(workdir / "threshold.json", self._threshold_report(vectors))
        log.info(
            "steering: layer %d, mode %s, alpha %g, tau %s",
            self.plan.layer,
            self.mode,
            self.alpha,
            self.plan.tau,
        )

    def use_vectors(self, vectors: SteeringVectors, num_layers: int) -> None:
        """Resolve layer, scale and τ from ``vectors`` (``fit`` calls this; tests may too)."""
        if self.layer == "auto":
            layer = choose_layer(vectors.auroc, self.skip_last)
        elif not 0 <= int(self.layer) < num_layers:
            raise ConfigError(
                f"method.layer={self.layer} is out of range: model has {num_layers} decoder "
                f"layers (0..{num_layers - 1}); pick one in range or method.layer=auto"
            )
        else:
            layer = int(self.layer)
        tau = None
        if self.mode == "conditional":
            tau = self.tau if self.tau is not None else float(vectors.thresholds[layer])
        self.vectors = vectors
        self.plan = SteeringPlan(
            layer=layer,
            direction=vectors.directions[layer],
            scale=self.alpha * float(vectors.mean_norms[layer]),
            mode=self.mode,
            positions=self.positions,
            tau=tau,
        )

    def _threshold_report(self, vectors: SteeringVectors) -> dict:
        assert self.plan is not None
        layer = self.plan.layer
        from_data = self.tau is None
        return {
            "layer": layer,
            "tau": self.plan.tau,
            "source": "calibration split (max balanced accuracy)" if from_data else "method.tau",
            "balanced_accuracy": float(vectors.threshold_accuracy[layer]) if from_data else None,
            "n_unsafe": vectors.meta.get("n_unsafe"),
            "n_safe": vectors.meta.get("n_safe"),
        }

    # --- generation -------------------------------------------------------------------

    def conversation(self, sample: Sample) -> Conversation:
        return default_conversation(sample)

    @contextmanager
    def active(self, vlm: VLM) -> Iterator[None]:
        """Steering hooks installed for the duration of the block, removed in ``finally``."""
        if self.plan is None:
            raise RuntimeError("SteeringMethod.active() before fit(): fit or use_vectors first")
        hooks = SteeringHooks(self.plan, vlm)
        try:
            hooks.install()
            yield
        finally:
            hooks.remove()

    def fingerprint(self) -> str:
        if self.plan is None or self.vectors is None:
            raise RuntimeError("SteeringMethod.fingerprint() before fit()")
        parts = [
            f"vectors={self.vectors.content_hash()}",
            f"layer={self.plan.layer}",
            f"mode={self.mode}",
            f"positions={self.positions}",
        ]
        if self.mode != "ablate":
            parts.append(f"alpha={self.alpha!r}")
        if self.mode == "conditional":
            parts.append(f"tau={self.plan.tau!r}")
        return "steering:" + hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


class SteeringHooks:
    """The forward hooks that carry out a :class:`SteeringPlan` on a VLM.

    A pre-hook on the top model records the 2D attention mask of each forward pass (real vs
    padding positions, and how many positions the KV cache already holds). A forward hook on
    the steered decoder layer - registered first, so transformers' own output capture sees
    the steered stream - edits that layer's output.
    """

    def __init__(self, plan: SteeringPlan, vlm: VLM) -> None:
        self.plan = plan
        self.model = vlm.model
        self.layer_module = vlm.decoder_layers[plan.layer]
        self.unit = plan.direction.to(device=vlm.device, dtype=vlm.dtype)
        self.unit32 = plan.direction.to(device=vlm.device, dtype=torch.float32)
        self.delta = (
            (plan.direction * plan.scale).to(device=vlm.device, dtype=vlm.dtype).view(1, 1, -1)
        )
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mask: torch.Tensor | None = None
        self._cached = 0  # positions in the KV cache when no mask is given
        self._in_forward = False
        self._row_delta: torch.Tensor | None = None  # conditional: [batch, 1, hidden]
        self.last_signs: torch.Tensor | None = None  # conditional: +1/-1 per row of the last prompt

    def install(self) -> None:
        self.handles.append(
            self.model.register_forward_pre_hook(self._record_inputs, with_kwargs=True)
        )
        self.handles.append(self.model.register_forward_hook(self._forget_inputs, always_call=True))
        self.handles.append(self.layer_module.register_forward_hook(self._steer, prepend=True))

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    def _record_inputs(self, _module, _args, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None and not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
            raise RuntimeError(
                "steering needs the 2D attention mask of each forward pass; static or compiled "
                "caches (which pass 4D masks) are not supported"
            )
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self._mask = mask
        self._cached = int(cache.get_seq_length()) if mask is None and cache is not None else 0
        self._in_forward = True

    def _forget_inputs(self, _module, _args, _output) -> None:
        self._mask, self._in_forward = None, False

    def _steer(self, _module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        steered = self._edit(hidden)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    def _edit(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self._in_forward:
            raise RuntimeError(
                "a steered decoder layer ran outside the model's forward; call the model "
                "itself (vlm.model / vlm.generate) while steering is active"
            )
        if self.delta.device != hidden.device:  # a layer placed on another GPU (device_map)
            self.unit, self.unit32, self.delta = (
                t.to(hidden.device) for t in (self.unit, self.unit32, self.delta)
            )
        length = hidden.shape[1]
        mask = self._mask if self._mask is None else self._mask.to(hidden.device)
        if mask is not None and mask.shape[1] < length:
            raise RuntimeError(
                f"attention mask ({mask.shape[1]}) shorter than the sequence ({length})"
            )
        cached = mask.shape[1] - length if mask is not None else self._cached
        if cached == 0:  # the prompt (prefill): padding and, for "generated", earlier tokens kept
            real = mask[:, -length:].bool() if mask is not None else None
            if self.plan.mode == "conditional":
                self._decide(hidden, real)
            select = self._prompt_positions(hidden, real)
        else:  # KV-cache decoding: every position is a new, generated token
            select = None
        return self._apply(hidden, select)

    def _prompt_positions(
        self, hidden: torch.Tensor, real: torch.Tensor | None
    ) -> torch.Tensor | None:
        """``[batch, length, 1]`` 0/1 weights of the prompt positions to steer (None = all)."""
        if self.plan.positions == "all":
            return None if real is None else real.unsqueeze(-1).to(hidden.dtype)
        select = torch.zeros(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        select[:, -1] = 1.0 if real is None else real[:, -1].to(hidden.dtype)
        return select.unsqueeze(-1)

    def _decide(self, hidden: torch.Tensor, real: torch.Tensor | None) -> None:
        if real is not None and not bool(real[:, -1].all()):
            raise RuntimeError(
                "conditional steering needs left padding (the last position is padding)"
            )
        projection = hidden[:, -1, :].to(torch.float32) @ self.unit32
        signs = torch.where(projection > self.plan.tau, 1.0, -1.0)
        self.last_signs = signs
        self._row_delta = signs.to(hidden.dtype).view(-1, 1, 1) * self.delta

    def _apply(self, hidden: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        if self.plan.mode == "ablate":
            component = (hidden @ self.unit).unsqueeze(-1)
            if select is not None:
                component = component * select
            return hidden - component * self.unit
        delta = self._row_delta if self.plan.mode == "conditional" else self.delta
        if select is not None:
            delta = delta * select
        return hidden + delta


def _config_problems(
    mode, alpha, layer, positions, tau, direction, holdout, skip_last, batch_size
) -> list[str]:
    problems = []
    if mode not in MODES:
        problems.append(f"method.mode={mode!r} must be one of {', '.join(MODES)}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        problems.append(f"method.alpha={alpha!r} must be a number")
    if layer != "auto" and (isinstance(layer, bool) or not isinstance(layer, int)):
        problems.append(f"method.layer={layer!r} must be a decoder-layer index or auto")
    if positions not in POSITIONS:
        problems.append(f"method.positions={positions!r} must be one of {', '.join(POSITIONS)}")
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, int | float)):
        problems.append(
            f"method.tau={tau!r} must be a number or null (chosen on the calibration split)"
        )
    if direction not in DIRECTION_KINDS:
        problems.append(
            f"method.direction={direction!r} must be one of {', '.join(DIRECTION_KINDS)}"
        )
    if not 0 <= holdout < 1:
        problems.append(f"method.holdout={holdout} must be in [0, 1)")
    if not 0 <= skip_last < 1:
        problems.append(f"method.skip_last={skip_last} must be in [0, 1)")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"method.forward_batch_size={batch_size!r} must be a positive integer")
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
