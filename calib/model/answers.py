"""How a chat template writes an answer, in tokens.

A template that writes ``ASSISTANT: {answer}`` (LLaVA-1.5, the organism) or ``Assistant:
{answer}`` (Idefics3) makes the model produce the answer's first word with its leading space:
in byte-level BPE a different token from the word on its own. Training targets (LoRA) and
the refusal tokens steering scores must be those tokens, not the answer tokenized alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from calib.model.vlm import VLM

#: A text no template or answer contains, to find where an answer goes in a rendering.
ANSWER_MARKER = "vsc-calib-answer-marker"


@dataclass(frozen=True)
class AssistantTurn:
    """How the chat template writes an answer: ``anchor`` is a rendered generation prompt
    (what the model sees before its first token) and ``anchor_ids`` its tokens, ``lead`` the
    text the template puts between that prompt and the answer (``" "`` after LLaVA-1.5's
    ``ASSISTANT:``, ``""`` after Gemma-3's ``<start_of_turn>model\n``), ``tail`` what it
    writes after the answer (where its end-of-turn token is)."""

    anchor: str
    anchor_ids: tuple[int, ...]
    lead: str
    tail: str


def assistant_turn(vlm: VLM) -> AssistantTurn:
    """The template's generation prompt, answer lead and tail, read off a rendered exchange
    (empty where the template cannot render an assistant turn: answers as they are)."""
    user = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    answer = {"role": "assistant", "content": [{"type": "text", "text": ANSWER_MARKER}]}
    try:
        anchor = vlm.render([user], add_generation_prompt=True)[0]
        full = vlm.render([[*user, answer]], add_generation_prompt=False)[0]
    except Exception:  # a template that cannot render an assistant turn
        return AssistantTurn("", (), "", "")
    if ANSWER_MARKER not in full:
        return AssistantTurn("", (), "", "")
    head, tail = full.split(ANSWER_MARKER, 1)
    if not head.startswith(anchor):
        return AssistantTurn("", (), "", tail)
    ids = tuple(vlm.tokenizer(anchor, add_special_tokens=False)["input_ids"])
    return AssistantTurn(anchor, ids, head[len(anchor) :], tail)


def answer_tokens(vlm: VLM, text: str, turn: AssistantTurn) -> list[int]:
    """``text``'s tokens as they follow the generation prompt in a rendered answer.

    Tokenized in context (anchor + lead + text, minus the anchor's tokens): a template that
    writes ``ASSISTANT: {answer}`` makes the model produce the answer's first word with its
    leading space, a different token from the word alone in byte-level BPE, while
    SentencePiece tokenizers would double a space added naively. Falls back to the answer's
    own tokens when the anchor's tokens are not a prefix (a merge across the boundary)."""
    tokenizer = vlm.tokenizer
    if turn.anchor:
        context = list(turn.anchor_ids)
        ids = tokenizer(turn.anchor + turn.lead + text, add_special_tokens=False)["input_ids"]
        if ids[: len(context)] == context and len(ids) > len(context):
            return list(ids[len(context) :])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
