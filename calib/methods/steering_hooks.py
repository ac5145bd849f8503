"""The forward hooks that carry out a steering plan, and weight orthogonalisation.

Every edit acts on the residual stream at a decoder layer's **input** (as the reference code,
``andyrdt/refusal_direction``): the input of layer ``k >= 1`` is edited in a forward hook on
layer ``k - 1``'s output, registered first (``prepend``) so that transformers' own output
capture (``output_hidden_states=True``) sees the edited stream; the input of layer 0 is
edited in a pre-hook on layer 0 (the capture reads its arguments after pre-hooks ran).
Directional ablation at every layer also edits what each attention and MLP block writes into
the stream. On architectures with a norm after each block (Gemma 2/3) what is written is
``gain * x / rms(x)``; projecting ``u * gain`` (normalised) out of the block's output ``x``
leaves the written vector with no component along ``u`` - the same rule the weight
orthogonalisation uses, so both give the same logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from calib.errors import ConfigError
from calib.model import VLM
from train.steering import layer_input

Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SteeringPlan:
    """What the hooks do, resolved after fitting.

    Attributes:
        mode: ``add`` | ``ablate`` | ``bidirectional`` | ``conditional``.
        layer: the decoder layer whose input is edited (add, bidirectional, conditional,
            ablate with ``ablate_layers=selected``).
        positions: ``all`` | ``prompt`` | ``generated`` | ``text_only``.
        vector: ``[hidden]`` what is added (add; conditional's behaviour vector), scaled.
        direction: ``[hidden]`` unit direction (ablate; bidirectional).
        ablate_layers: ``all`` (every layer input, attention and MLP output) | ``selected``.
        scale: bidirectional: ``± scale * direction`` is added.
        tau: bidirectional: projection threshold; conditional: similarity threshold.
        condition: ``[hidden]`` CAST condition vector; condition_layer: where it is read.
        condition_above: conditional: the condition holds when similarity > τ (else < τ).
    """

    mode: str
    layer: int
    positions: str = "all"
    vector: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    ablate_layers: str = "all"
    scale: float = 0.0
    tau: float | None = None
    condition: torch.Tensor | None = None
    condition_layer: int | None = None
    condition_above: bool = True


def has_post_norms(layer: torch.nn.Module) -> bool:
    """Whether the block normalises its attention/MLP output before adding it (Gemma 2/3)."""
    return hasattr(layer, "post_feedforward_layernorm") and hasattr(
        layer, "post_attention_layernorm"
    )


def norm_gain(norm: torch.nn.Module, hidden: int, like: torch.Tensor) -> torch.Tensor:
    """The per-coordinate gain of an RMS norm (its output on a vector of ones), float32."""
    ones = torch.ones(1, 1, hidden, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        return norm(ones).reshape(-1).to(torch.float32)


def write_directions(vlm: VLM, unit: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the unit directions to project out of the attention and MLP outputs so that
    what they write into the residual stream has no component along ``unit``."""
    unit32 = unit.to(torch.float32)
    result = []
    for layer in vlm.decoder_layers:
        if not has_post_norms(layer):
            result.append((unit32, unit32))
            continue
        pair = []
        for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm):
            weighted = unit32.to(vlm.device) * norm_gain(
                norm, vlm.hidden_size, unit32.to(vlm.device)
            )
            pair.append((weighted / weighted.norm()).cpu())
        result.append((pair[0], pair[1]))
    return result


def block_parts(vlm: VLM) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """Each layer's attention and MLP modules (``self_attn``, ``mlp``)."""
    parts = []
    for index, layer in enumerate(vlm.decoder_layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None:
            raise ConfigError(
                f"method.ablate_layers=all needs each decoder layer's self_attn and mlp; layer "
                f"{index} ({type(layer).__name__}) lacks one: use method.ablate_layers=selected"
            )
        parts.append((attn, mlp))
    return parts


def image_token_id(vlm: VLM) -> int | None:
    config = vlm.model.config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


class SteeringHooks:
    """Installs the hooks of a :class:`SteeringPlan` on a VLM (``install``/``remove``).

    A pre-hook on the top model records each forward pass's 2D attention mask, its input ids
    and how many positions the KV cache already holds; the edits use them to tell prompt
    (prefill) from generated positions, padding from real tokens and image from text tokens.
    """

    def __init__(self, plan: SteeringPlan, vlm: VLM) -> None:
        self.plan = plan
        self.vlm = vlm
        self.model = vlm.model
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mask: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None
        self._cached = 0
        self._in_forward = False
        self._select: dict[int, torch.Tensor | None] = {}
        self._row_delta: torch.Tensor | None = None  # bidirectional / conditional: [b, 1, h]
        self.last_signs: torch.Tensor | None = None  # bidirectional: +1/-1 per prompt row
        self.last_met: torch.Tensor | None = None  # conditional: condition held, per row
        self.last_similarity: torch.Tensor | None = None  # conditional: per row
        self.image_token = image_token_id(vlm)
        if plan.positions == "text_only" and self.image_token is None:
            raise ConfigError(
                f"method.positions=text_only: {type(vlm.model).__name__}'s config names no "
                "image token (image_token_id); use method.positions=all"
            )

    # --- installing ---------------------------------------------------------------------

    def install(self) -> None:
        self.handles.append(
            self.model.register_forward_pre_hook(self._record_inputs, with_kwargs=True)
        )
        self.handles.append(self.model.register_forward_hook(self._forget_inputs, always_call=True))
        plan = self.plan
        sites: dict[int, list[Edit]] = {}
        if plan.mode == "ablate":
            unit = plan.direction
            layers = range(self.vlm.num_layers) if plan.ablate_layers == "all" else [plan.layer]
            for k in layers:
                sites.setdefault(k, []).append(self._ablation(unit))
            if plan.ablate_layers == "all":
                directions = write_directions(self.vlm, unit)
                for (attn, mlp), (d_attn, d_mlp) in zip(
                    block_parts(self.vlm), directions, strict=True
                ):
                    self._on_output(attn, self._ablation(d_attn))
                    self._on_output(mlp, self._ablation(d_mlp))
        elif plan.mode == "conditional":
            sites.setdefault(plan.condition_layer, []).append(self._decide_condition)
            sites.setdefault(plan.layer, []).append(self._add_rows)
        elif plan.mode == "bidirectional":
            sites.setdefault(plan.layer, []).extend([self._decide_sign, self._add_rows])
        else:
            sites.setdefault(plan.layer, []).append(self._addition(plan.vector))
        for k, edits in sorted(sites.items()):
            self._on_input(k, edits)

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    def _on_input(self, k: int, edits: list[Edit]) -> None:
        def run(hidden: torch.Tensor) -> torch.Tensor:
            for edit in edits:
                hidden = edit(hidden)
            return hidden

        if k == 0:

            def pre_hook(_module, args, kwargs):
                hidden = run(layer_input(args, kwargs))
                if args:
                    return (hidden, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": hidden}

            layer = self.vlm.decoder_layers[0]
            self.handles.append(
                layer.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True)
            )
        else:
            self._on_output(self.vlm.decoder_layers[k - 1], run)

    def _on_output(self, module: torch.nn.Module, edit: Edit) -> None:
        def hook(_module, _args, output):
            if isinstance(output, tuple):
                return (edit(output[0]), *output[1:])
            return edit(output)

        self.handles.append(module.register_forward_hook(hook, prepend=True))

    # --- per forward pass ---------------------------------------------------------------

    def _record_inputs(self, _module, _args, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None and not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
            raise RuntimeError(
                "steering needs the 2D attention mask of each forward pass; static or compiled "
                "caches (which pass 4D masks) are not supported"
            )
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self._mask = mask
        self._ids = kwargs.get("input_ids")
        self._cached = int(cache.get_seq_length()) if mask is None and cache is not None else 0
        self._select = {}
        self._in_forward = True

    def _forget_inputs(self, _module, _args, _output) -> None:
        self._mask, self._ids, self._in_forward, self._select = None, None, False, {}

    def _prefill(self, hidden: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
        """Whether this pass is the prompt, and its real (non-padding) positions ``[b, t]``."""
        if not self._in_forward:
            raise RuntimeError(
                "a steered decoder layer ran outside the model's forward; call the model "
                "itself (vlm.model / vlm.generate) while steering is active"
            )
        length = hidden.shape[1]
        mask = self._mask
        if mask is not None and mask.shape[1] < length:
            raise RuntimeError(
                f"attention mask ({mask.shape[1]}) shorter than the sequence ({length})"
            )
        cached = mask.shape[1] - length if mask is not None else self._cached
        real = None if mask is None else mask[:, -length:].to(hidden.device).bool()
        return cached == 0, real

    def _weights(self, hidden: torch.Tensor, exact_all: bool = False) -> torch.Tensor | bool | None:
        """``[b, t, 1]`` 0/1 weights of the positions to edit; None = all; False = none."""
        key = int(exact_all)
        if key in self._select:
            return self._select[key]
        prefill, real = self._prefill(hidden)
        positions = self.plan.positions
        weights: torch.Tensor | bool | None
        if not prefill:  # KV-cache decoding: every position is a new, generated token
            weights = False if positions == "prompt" else None
        elif positions == "all" and exact_all:
            weights = None  # ablation: the reference projects every position, padding too
        elif positions in ("all", "prompt"):
            weights = None if real is None else real.unsqueeze(-1).to(hidden.dtype)
        elif positions == "generated":
            select = torch.zeros(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
            select[:, -1] = 1.0 if real is None else real[:, -1].to(hidden.dtype)
            weights = select.unsqueeze(-1)
        else:  # text_only
            if self._ids is None or self._ids.shape[1] != hidden.shape[1]:
                raise RuntimeError(
                    "method.positions=text_only needs the input ids of the prompt (the model "
                    "was called with inputs_embeds)"
                )
            text = self._ids.to(hidden.device) != self.image_token
            if real is not None:
                text = text & real
            weights = text.unsqueeze(-1).to(hidden.dtype)
        self._select[key] = weights
        return weights

    # --- edits --------------------------------------------------------------------------

    def _ablation(self, unit: torch.Tensor) -> Edit:
        cache: dict[tuple, torch.Tensor] = {}

        def edit(hidden: torch.Tensor) -> torch.Tensor:
            weights = self._weights(hidden, exact_all=True)
            if weights is False:
                return hidden
            key = (hidden.device, hidden.dtype)
            if key not in cache:
                cache[key] = unit.to(device=hidden.device, dtype=hidden.dtype)
            direction = cache[key]
            component = (hidden @ direction).unsqueeze(-1)
            if weights is not None:
                component = component * weights
            return hidden - component * direction

        return edit

    def _addition(self, vector: torch.Tensor) -> Edit:
        cache: dict[tuple, torch.Tensor] = {}

        def edit(hidden: torch.Tensor) -> torch.Tensor:
            weights = self._weights(hidden)
            if weights is False:
                return hidden
            key = (hidden.device, hidden.dtype)
            if key not in cache:
                cache[key] = vector.to(device=hidden.device, dtype=hidden.dtype).view(1, 1, -1)
            delta = cache[key]
            return hidden + (delta if weights is None else delta * weights)

        return edit

    def _add_rows(self, hidden: torch.Tensor) -> torch.Tensor:
        """Adds the per-row vector decided on the prompt (nothing for rows left unsteered)."""
        weights = self._weights(hidden)
        if weights is False or self._row_delta is None:
            return hidden
        delta = self._row_delta.to(device=hidden.device, dtype=hidden.dtype)
        return hidden + (delta if weights is None else delta * weights)

    def _decide_sign(self, hidden: torch.Tensor) -> torch.Tensor:
        """Bidirectional: +scale·v when the last prompt token projects above τ, else -scale·v."""
        prefill, real = self._prefill(hidden)
        if not prefill:
            return hidden
        if real is not None and not bool(real[:, -1].all()):
            raise RuntimeError(
                "bidirectional steering needs left padding (last position is padding)"
            )
        unit = self.plan.direction.to(device=hidden.device, dtype=torch.float32)
        projection = hidden[:, -1, :].to(torch.float32) @ unit
        signs = torch.where(projection > self.plan.tau, 1.0, -1.0)
        self.last_signs = signs.cpu()
        self._row_delta = (signs.view(-1, 1, 1) * self.plan.scale * unit.view(1, 1, -1)).to(
            hidden.dtype
        )
        return hidden

    def _decide_condition(self, hidden: torch.Tensor) -> torch.Tensor:
        """CAST: on the prompt, cos(h, tanh(P h)) of the mean-pooled state against τ."""
        prefill, real = self._prefill(hidden)
        if not prefill:
            return hidden
        similarity = condition_similarity(hidden, real, self.plan.condition)
        met = (
            similarity > self.plan.tau if self.plan.condition_above else similarity < self.plan.tau
        )
        self.last_similarity, self.last_met = similarity.cpu(), met.cpu()
        if not bool(met.any()):
            self._row_delta = None  # nothing is changed: bit-identical to no steering
        else:
            vector = self.plan.vector.to(device=hidden.device, dtype=torch.float32)
            self._row_delta = (met.to(torch.float32).view(-1, 1, 1) * vector.view(1, 1, -1)).to(
                hidden.dtype
            )
        return hidden


def condition_similarity(
    hidden: torch.Tensor, real: torch.Tensor | None, condition: torch.Tensor
) -> torch.Tensor:
    """IBM CAST's similarity per row: the prompt's mean state ``h`` (real positions only),
    its projection ``P h`` on the condition vector (``P = c cᵀ / cᵀc``) through tanh, and the
    cosine of ``h`` with ``tanh(P h)``. float32 ``[batch]``."""
    states = hidden.to(torch.float32)
    if real is None:
        pooled = states.mean(dim=1)
    else:
        weights = real.to(torch.float32).unsqueeze(-1)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    c = condition.to(device=hidden.device, dtype=torch.float32)
    projected = torch.tanh((pooled @ c / (c @ c)).unsqueeze(-1) * c.view(1, -1))
    return torch.nn.functional.cosine_similarity(pooled, projected, dim=-1)


@contextmanager
def installed(plan: SteeringPlan, vlm: VLM) -> Iterator[SteeringHooks]:
    """The plan's hooks for the duration of the block, removed in ``finally``."""
    hooks = SteeringHooks(plan, vlm)
    try:
        hooks.install()
        yield hooks
    finally:
        hooks.remove()


# --- weight orthogonalisation -------------------------------------------------------------


def _projector_outputs(vlm: VLM) -> list[tuple[torch.Tensor, str]]:
    """The weights (and biases) whose output enters the text decoder as image embeddings:
    ``(tensor, layout)`` with layout ``out_in`` (a Linear's weight ``[hidden, in]``), ``bias``
    or ``in_out`` (a matrix applied as ``x @ W``, Gemma 3)."""
    hidden = vlm.hidden_size
    found: list[tuple[torch.Tensor, str]] = []
    for name, module in vlm.model.named_modules():
        if not (name.endswith("multi_modal_projector") or name.endswith("connector")):
            continue
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        linears = [m for m in linears if m.out_features == hidden]
        if linears:
            found.append((linears[-1].weight, "out_in"))
            if linears[-1].bias is not None:
                found.append((linears[-1].bias, "bias"))
        for pname, param in module.named_parameters(recurse=False):
            if param.ndim == 2 and param.shape[-1] == hidden and "proj" in pname:
                found.append((param, "in_out"))
        if found:
            return found
    return found


def _orthogonal(tensor: torch.Tensor, unit: torch.Tensor, layout: str) -> torch.Tensor:
    u = unit.to(device=tensor.device, dtype=torch.float32)
    w = tensor.to(torch.float32)
    if layout == "out_in":  # rows index the output: W - u (uᵀ W)
        w = w - torch.outer(u, u @ w)
    elif layout == "in_out" or layout == "rows":  # columns index the output: W - (W u) uᵀ
        w = w - torch.outer(w @ u, u)
    else:  # bias
        w = w - (w @ u) * u
    return w.to(tensor.dtype)


@contextmanager
def orthogonalized(vlm: VLM, unit: torch.Tensor) -> Iterator[None]:
    """The model's weights edited so that nothing writes ``unit`` into the residual stream
    (Arditi et al.'s weight orthogonalisation): the token embeddings, the image projector's
    output, and every attention ``o_proj`` and MLP ``down_proj`` (against the gain-weighted
    direction under a post-block norm). The exact original weights are restored on exit; a
    tied output embedding is untied for the duration so the logits' read-out is unchanged.
    """
    model = vlm.model
    edits: list[tuple[torch.Tensor, str, torch.Tensor]] = []
    embeddings = model.get_input_embeddings()
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embeddings.weight
    edits.append((embeddings.weight, "rows", unit))
    edits += [(t, layout, unit) for t, layout in _projector_outputs(vlm)]
    for index, (layer, (d_attn, d_mlp)) in enumerate(
        zip(vlm.decoder_layers, write_directions(vlm, unit), strict=True)
    ):
        for owner, name, direction in (
            ("self_attn", "o_proj", d_attn),
            ("mlp", "down_proj", d_mlp),
        ):
            linear = getattr(getattr(layer, owner, None), name, None)
            if not isinstance(linear, torch.nn.Linear):
                raise ConfigError(
                    f"method.orthogonalize=true needs {owner}.{name} in every decoder layer; "
                    f"layer {index} ({type(layer).__name__}) has none: use "
                    "method.orthogonalize=false (runtime ablation)"
                )
            edits.append((linear.weight, "out_in", direction))
            if linear.bias is not None:
                edits.append((linear.bias, "bias", direction))
    saved = [tensor.detach().clone() for tensor, _, _ in edits]
    original_output = output.weight if tied else None
    try:
        with torch.no_grad():
            if tied:
                output.weight = torch.nn.Parameter(embeddings.weight.detach().clone(), False)
            for tensor, layout, direction in edits:
                tensor.copy_(_orthogonal(tensor, direction, layout))
        yield
    finally:
        with torch.no_grad():
            for (tensor, _, _), copy in zip(edits, saved, strict=True):
                tensor.copy_(copy)
            if tied:
                output.weight = original_output
