"""Batched, cached, resumable generation over samples.

Conversations are built by the method, rendered once, keyed
(:func:`calib.generation.cache.generation_key`) and looked up in the generation cache; only
the missing ones are generated, in batches of
similar length (longest first, so an out-of-memory error shows up at once), and each batch
is committed to the cache as soon as it is done. A run killed at any moment therefore
loses at most the batch in flight, and the same command run again picks up from there.
Outputs always come back in sample order.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from calib.chat import conversation_images
from calib.generation.cache import Entry, GenerationCache, generation_key
from calib.model import VLM
from calib.types import CalibrationMethod, Conversation, Sample

log = logging.getLogger("calib.generation.generate")

#: What the CUDA allocator raises when a batch does not fit (torch < 2.5 has only the cuda one).
OUT_OF_MEMORY: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)
IMAGE_LENGTH = 1000  # characters an image counts for when sorting inputs by length
SAMPLING_ONLY = ("temperature", "top_p", "seed")  # decoding settings greedy decoding ignores


@dataclass(frozen=True)
class Generation:
    """Responses in sample order, and how many were generated now vs served by the cache."""

    responses: list[str]
    generated: int
    cached: int


def length_order(
    vlm: VLM, conversations: Sequence[Conversation], rendered: Sequence[str] | None = None
) -> list[int]:
    """Indices sorted by rendered input length, longest first.

    Batching inputs of similar length wastes little compute on padding; the longest
    batch first makes an out-of-memory error show up at once rather than at the end.
    """
    texts = vlm.render(list(conversations)) if rendered is None else rendered
    sizes = [
        len(text) + IMAGE_LENGTH * len(conversation_images(c))
        for text, c in zip(texts, conversations, strict=True)
    ]
    return sorted(range(len(conversations)), key=lambda i: (-sizes[i], i))


def context_length(vlm: VLM) -> int | None:
    """The most tokens (prompt + generated) the text decoder takes; None when unknown."""
    value = getattr(vlm.model.config.get_text_config(), "max_position_embeddings", None)
    return int(value) if value else None


def prompt_tokens(vlm: VLM, conversations: Sequence[Conversation]) -> list[int]:
    """Each conversation's input length in tokens, image tokens included (as ``encode``
    makes it, one at a time: no padding)."""
    return [int(vlm.encode([c])["attention_mask"].sum()) for c in conversations]


def token_batch_size(prompt: int, max_new_tokens: int, max_batch_tokens: int | None) -> int:
    """Prompts per batch so that batch x (longest prompt + new tokens) stays within
    ``max_batch_tokens`` (at least one; a huge number when there is no bound)."""
    if max_batch_tokens is None:
        return 1 << 30
    return max(1, max_batch_tokens // (prompt + max_new_tokens))


def batches(indices: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), batch_size):
        yield list(indices[start : start + batch_size])


def key_decoding(decoding: dict[str, Any]) -> dict[str, Any]:
    """The decoding settings that decide the output (greedy ignores the sampling ones)."""
    if decoding.get("do_sample"):
        return dict(decoding)
    return {k: v for k, v in decoding.items() if k not in SAMPLING_ONLY}


def model_key(vlm: VLM) -> str:
    """The model part of a cache key: what the weights are and the dtype they run in."""
    return f"{vlm.identity}|{str(vlm.dtype).removeprefix('torch.')}"


def generate(
    vlm: VLM,
    method: CalibrationMethod,
    samples: Sequence[Sample],
    *,
    batch_size: int,
    decoding: dict[str, Any],
    cache: GenerationCache | None = None,
    progress: bool = True,
    max_batch_tokens: int | None = None,
) -> Generation:
    """Generate one response per sample with the method active, reusing the cache.

    Args:
        vlm: the loaded model.
        method: the (fitted) calibration method; its fingerprint is part of every key.
        samples: what to answer.
        batch_size: prompts per ``vlm.generate`` call (halved on out-of-memory errors).
        decoding: keyword arguments of ``vlm.generate`` (max_new_tokens, do_sample, ...).
        cache: where finished batches are committed and looked up; None generates all.
        progress: show a progress bar.
        max_batch_tokens: bound on a batch's prompt + new tokens (summed over its prompts,
            padding included); None = ``batch_size`` alone bounds it.
    """
    if batch_size < 1:
        raise ValueError(f"generation.batch_size={batch_size} must be >= 1")
    conversations = [method.conversation(s) for s in samples]
    responses: list[str | None] = [None] * len(samples)
    keys: list[str] = []
    if cache is not None:
        rendered = vlm.render(conversations)
        fingerprint, settings = method.fingerprint(), key_decoding(decoding)
        model = model_key(vlm)
        keys = [
            generation_key(
                model=model,
                method=fingerprint,
                rendered=text,
                images=conversation_images(c),
                decoding=settings,
            )
            for text, c in zip(rendered, conversations, strict=True)
        ]
        found = cache.get_many(keys)
        for i, key in enumerate(keys):
            responses[i] = found.get(key)
        missing = {i for i, r in enumerate(responses) if r is None}
        order = [i for i in length_order(vlm, conversations, rendered) if i in missing]
    else:
        order = length_order(vlm, conversations)
        model = fingerprint = ""
    # Jobs that need the same generations (a sweep's baseline, a base model's answers) take
    # turns: one generates, the others wait, then find them in the cache.
    claim = cache.claim([keys[i] for i in order]) if cache is not None and order else nullcontext()
    with claim:
        if cache is not None and order:  # what another job generated while this one waited
            found = cache.get_many([keys[i] for i in order])
            for i in order:
                responses[i] = found.get(keys[i])
            order = [i for i in order if responses[i] is None]
        cached = len(samples) - len(order)
        if cached:
            log.info("generation cache: %d of %d responses reused", cached, len(samples))

        def commit(batch: list[int], outputs: list[str]) -> None:
            for i, text in zip(batch, outputs, strict=True):
                responses[i] = text
            if cache is not None:
                cache.put_many(
                    Entry(keys[i], text, model, fingerprint, samples[i].id)
                    for i, text in zip(batch, outputs, strict=True)
                )
            bar.update(len(batch))

        bar = tqdm(total=len(samples), initial=cached, desc="generate", disable=not progress)
        try:
            if order:
                lengths = None
                if max_batch_tokens is not None:
                    measured = prompt_tokens(vlm, [conversations[i] for i in order])
                    lengths = dict(zip(order, measured, strict=True))
                with method.active(vlm):
                    generate_in_batches(
                        vlm,
                        conversations,
                        order,
                        batch_size,
                        decoding,
                        commit,
                        lengths=lengths,
                        max_batch_tokens=max_batch_tokens,
                    )
        except KeyboardInterrupt:
            done = sum(r is not None for r in responses)
            where = (
                f"saved in the cache {cache.path}" if cache is not None else "lost (cache disabled)"
            )
            log.warning(
                "interrupted: %d of %d responses were done and are %s", done, len(samples), where
            )
            raise
        finally:
            bar.close()
        return Generation([r if r is not None else "" for r in responses], len(order), cached)


def generate_in_batches(
    vlm: VLM,
    conversations: Sequence[Conversation],
    order: Sequence[int],
    batch_size: int,
    decoding: dict[str, Any],
    commit: Callable[[list[int], list[str]], None],
    *,
    lengths: dict[int, int] | None = None,
    max_batch_tokens: int | None = None,
) -> None:
    """Generate ``conversations[i]`` for i in ``order``, ``batch_size`` at a time.

    With ``lengths`` (prompt tokens) and ``max_batch_tokens``, a batch also holds no more
    prompts than fit the token bound (its first, longest prompt sets the padded length).
    On an out-of-memory error the batch is halved and retried (down to one prompt); the
    smaller size is kept for the rest of the run. Each finished batch goes to ``commit``.
    """
    size, position = batch_size, 0
    new_tokens = int(decoding.get("max_new_tokens", 0))
    while position < len(order):
        fits = size
        if lengths is not None:
            fits = min(
                size, token_batch_size(lengths[order[position]], new_tokens, max_batch_tokens)
            )
        batch = list(order[position : position + fits])
        try:
            outputs = vlm.generate([conversations[i] for i in batch], **decoding)
        except OUT_OF_MEMORY as err:
            if len(batch) == 1:
                raise type(err)(
                    "out of memory generating a single prompt: lower generation.max_new_tokens, "
                    "load the model in a smaller model.dtype, or use a larger device"
                ) from err
            outputs = None
        if outputs is None:  # outside the except block, so the failed batch's tensors are freed
            size = max(1, len(batch) // 2)
            log.warning(
                "out of memory with a batch of %d prompts; retrying with %d "
                "(set generation.batch_size=%d to start there)",
                len(batch),
                size,
                size,
            )
            _release_memory()
            continue
        commit(batch, list(outputs))
        position += len(batch)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
