"""Training batches whose prompt part is, token for token, what generation feeds the model.

TRL's vision collator renders and tokenizes prompt and completion its own way
(``add_special_tokens=False``): with templates that do not write the BOS (LLaVA-1.5) the
training prompt lacks the BOS that :meth:`calib.model.VLM.encode` adds at generation, the
answer gets no end-of-sequence token (the adapter never learns to stop), and Mllama's
cross-attention mask keeps the prompt's length. :class:`ParityCollator` instead

- encodes the prompts with :meth:`VLM.encode` itself (same rendering, same BOS rule, same
  image processing), then lays each row out unpadded from position 0 and pads on the right:
  the positions a token trains at are the ones generation gives it (generation derives them
  from the attention mask of its left-padded batch; a left-padded training row without
  position ids would train every shorter row at shifted positions),
- appends each completion's tokens as the template writes them after the generation prompt
  (:func:`answer_tokens`: with the space LLaVA-1.5's ``ASSISTANT:`` puts before the
  answer, the tokens the model will produce) and the template's end-of-turn token
  (:func:`end_of_turn_id`: ``<end_of_turn>``, ``<|im_end|>``, ``<end_of_utterance>``,
  ``<|eot_id|>``, or EOS when the template writes none),
- extends every per-token input to the full length (``token_type_ids``: text;
  Mllama's ``cross_attention_mask``: the completion attends to the images as the last prompt
  token does, which is what generation does), and
- labels only the completion (prompt and padding are ``-100``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from calib.model import VLM
from calib.model.answers import AssistantTurn, answer_tokens, assistant_turn
from calib.types import Conversation

#: Bump when the sequences the collator builds change: it is part of the training key.
COLLATOR_VERSION = 3
#: The ``token_type_ids`` value of completion tokens, where it is not 0 (text). PaliGemma
#: marks the prefix 0 (full attention) and the suffix 1 (causal).
_COMPLETION_TOKEN_TYPE = {"paligemma": 1}
#: Per-token inputs whose completion part repeats the last prompt position.
_REPEAT_LAST = ("cross_attention_mask",)


def stop_ids(vlm: VLM) -> set[int]:
    """The token ids that end generation (generation config and tokenizer EOS)."""
    configured = vlm.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(vlm.tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def end_of_turn_id(vlm: VLM, turn: AssistantTurn | None = None) -> int:
    """The token an answer ends with: the first stop token the chat template writes after an
    assistant message, or EOS when it writes none (LLaVA-1.5's template ends with a space)."""
    tail = (turn or assistant_turn(vlm)).tail
    stops = stop_ids(vlm)
    for token in vlm.tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if token in stops:
            return int(token)
    if vlm.tokenizer.eos_token_id is None:
        raise ValueError(
            f"{vlm.name}: the tokenizer has no EOS token and the chat template writes no stop "
            "token after an answer, so LoRA targets cannot be taught to end"
        )
    return int(vlm.tokenizer.eos_token_id)


def row_conversation(prompt: Sequence[Mapping[str, Any]], images: Sequence[Any]) -> Conversation:
    """A dataset row's prompt as a conversation again: the images put back into the image
    parts in order, and the ``None`` keys ``datasets`` adds to every part dropped (a template
    testing ``'image' in part`` would take a text part for an image)."""
    queue = list(images)
    conversation = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                clean = {k: v for k, v in part.items() if v is not None}
                if clean.get("type") == "image":
                    clean["image"] = queue.pop(0)
                parts.append(clean)
            content = parts
        conversation.append({"role": message["role"], "content": content})
    if queue:
        raise ValueError(f"{len(queue)} image(s) of a training row have no image part")
    return conversation


def completion_text(completion: Sequence[Mapping[str, Any]]) -> str:
    """The assistant text of a dataset row's ``completion`` column."""
    texts = []
    for message in completion:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [p["text"] for p in content if p.get("type") == "text" and p.get("text")]
    return "".join(texts)


class ParityCollator:
    """Collates ``prompt`` / ``completion`` / ``images`` rows for causal-LM training."""

    def __init__(self, vlm: VLM) -> None:
        self.vlm = vlm
        self._turn = assistant_turn(vlm)
        self.end_id = end_of_turn_id(vlm, self._turn)
        self.completion_type = _COMPLETION_TOKEN_TYPE.get(vlm.model.config.model_type, 0)

    def completion_ids(self, text: str) -> list[int]:
        """The answer's tokens as the template writes them after the generation prompt, and
        the end-of-turn token (see :func:`answer_tokens`)."""
        return [*answer_tokens(self.vlm, text, self._turn), self.end_id]

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        conversations = [row_conversation(r["prompt"], r.get("images") or []) for r in rows]
        prompts = self.vlm.encode(conversations)
        completions = [self.completion_ids(completion_text(r["completion"])) for r in rows]
        return join(prompts, completions, self.vlm.tokenizer.pad_token_id, self.completion_type)


def join(
    prompts: Mapping[str, torch.Tensor],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    completion_type: int = 0,
) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch + completions -> right-padded full sequences with labels.

    Inputs that are not per token (pixel values, image sizes, grids) pass through unchanged.
    """
    ids, mask = prompts["input_ids"], prompts["attention_mask"]
    batch, width = ids.shape
    per_token = [
        key
        for key, value in prompts.items()
        if key not in ("input_ids", "attention_mask")
        and torch.is_tensor(value)
        and value.dim() >= 2
        and tuple(value.shape[:2]) == (batch, width)
    ]
    kept = [int(n) for n in mask.sum(dim=1)]
    total = max(k + len(c) for k, c in zip(kept, completions, strict=True))
    out = {
        "input_ids": ids.new_full((batch, total), pad_id),
        "attention_mask": mask.new_zeros((batch, total)),
        "labels": ids.new_full((batch, total), -100),
    }
    for key in per_token:
        value = prompts[key]
        out[key] = value.new_zeros((batch, total, *value.shape[2:]))
    for row, (n, completion) in enumerate(zip(kept, completions, strict=True)):
        tail = torch.tensor(completion, dtype=ids.dtype, device=ids.device)
        end = n + len(completion)  # right padding: the row's tokens at positions 0..end-1
        out["input_ids"][row, :end] = torch.cat([ids[row, width - n :], tail])
        out["attention_mask"][row, :end] = 1
        out["labels"][row, n:end] = tail
        for key in per_token:
            value = prompts[key][row]
            out[key][row, :n] = value[width - n :]
            if key in _REPEAT_LAST:
                out[key][row, n:end] = value[width - 1 :].expand(len(completion), *value.shape[1:])
            elif key == "token_type_ids":
                out[key][row, n:end] = completion_type
    for key, value in prompts.items():
        if key not in out:
            out[key] = value
    return out
