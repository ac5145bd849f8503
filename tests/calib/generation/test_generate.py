"""Batched generation: input order, the cache, out-of-memory back-off, interruption, base answers.

The model is the real tiny LLaVA. ``Recording`` wraps it to watch the batches it is asked
for; the out-of-memory and Ctrl-C cases inject the error the CUDA allocator (or the user)
would raise, and everything else is the real generation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from calib.generation.cache import GenerationCache
from calib.generation.generate import generate
from calib.methods.none import NoMethod, base_answers
from calib.model import VLM
from calib.types import Sample

DECODING = {"max_new_tokens": 6, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0}


class Recording:
    """The real VLM, recording each ``generate`` call; may inject a fault before calling it."""

    def __init__(self, vlm: VLM, fault=None):
        self._vlm = vlm
        self._fault = fault  # called with the batch; may raise
        self.calls: list[list[str]] = []  # the rendered prompts of each call
        self.outputs: dict[str, str] = {}  # rendered prompt + images -> what the model said

    def __getattr__(self, name):
        return getattr(self._vlm, name)

    def generate(self, conversations, **decoding):
        if self._fault is not None:
            self._fault(conversations)
        outputs = self._vlm.generate(conversations, **decoding)
        rendered = self._vlm.render(conversations)
        self.calls.append(rendered)
        self.outputs.update(zip(rendered, outputs, strict=True))
        return outputs


class Tagged(NoMethod):
    """NoMethod with another fingerprint (a stand-in for any method that changes outputs)."""

    def fingerprint(self) -> str:
        return "tagged"


@pytest.fixture(scope="module")
def samples(tiny_images) -> list[Sample]:
    """Prompts of varied lengths, with and without images, in no particular length order."""
    words = [
        "please",
        "tell",
        "me",
        "how",
        "to",
        "bake",
        "bread",
        "at",
        "home",
        "with",
        "a",
        "simple",
        "oven",
        "today",
    ]
    lengths = [3, 11, 5, 13, 1, 8, 2, 12, 7, 4]
    return [
        Sample(
            id=f"s{i}",
            prompt=" ".join(words[:n]),
            image=str(tiny_images[i % 3]) if i % 2 else None,
            label="safe",
            category="test",
            condition="image" if i % 2 else "txt",
            group=f"g{i}",
        )
        for i, n in enumerate(lengths)
    ]


def test_outputs_come_back_in_input_order(tiny_llava, samples):
    model = Recording(tiny_llava)
    responses = generate(
        model, NoMethod(), samples, batch_size=3, decoding=DECODING, progress=False
    ).responses
    assert [len(call) for call in model.calls] == [3, 3, 3, 1]
    rendered = tiny_llava.render([NoMethod().conversation(s) for s in samples])
    assert responses == [model.outputs[text] for text in rendered]
    with_image = [s.image is not None for s in samples]
    by_size = sorted(range(len(samples)), key=lambda i: -(len(rendered[i]) + 1000 * with_image[i]))
    assert set(model.calls[0]) == {rendered[i] for i in by_size[:3]}, "longest batch first"
    assert set(model.calls[-1]) == {rendered[by_size[-1]]}


def test_cache_serves_a_rerun_and_keys_on_method_and_decoding(tiny_llava, samples, tmp_path):
    cache = GenerationCache.in_dir(tmp_path)
    first = generate(
        tiny_llava,
        NoMethod(),
        samples,
        batch_size=4,
        decoding=DECODING,
        cache=cache,
        progress=False,
    )
    assert (first.generated, first.cached) == (len(samples), 0)
    assert cache.count() == len(samples)

    model = Recording(tiny_llava)
    again = generate(
        model, NoMethod(), samples, batch_size=4, decoding=DECODING, cache=cache, progress=False
    )
    assert (again.generated, again.cached) == (0, len(samples))
    assert again.responses == first.responses and model.calls == []

    other_method = generate(
        model, Tagged(), samples[:3], batch_size=4, decoding=DECODING, cache=cache, progress=False
    )
    assert other_method.generated == 3
    longer = {**DECODING, "max_new_tokens": 7}
    other_decoding = generate(
        model, NoMethod(), samples[:2], batch_size=4, decoding=longer, cache=cache, progress=False
    )
    assert other_decoding.generated == 2


def test_out_of_memory_halves_the_batch(tiny_llava, samples, caplog):
    def fault(conversations):
        if len(conversations) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model = Recording(tiny_llava, fault)
    with caplog.at_level(logging.WARNING, logger="calib.generation.generate"):
        responses = generate(
            model, NoMethod(), samples, batch_size=8, decoding=DECODING, progress=False
        ).responses
    assert [len(call) for call in model.calls] == [2, 2, 2, 2, 2]
    assert "out of memory with a batch of 8 prompts; retrying with 4" in caplog.text
    assert "retrying with 2" in caplog.text
    rendered = tiny_llava.render([NoMethod().conversation(s) for s in samples])
    assert responses == [model.outputs[text] for text in rendered]


def test_out_of_memory_at_batch_size_one_says_what_to_do(tiny_llava, samples):
    def fault(conversations):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    model = Recording(tiny_llava, fault)
    with pytest.raises(torch.OutOfMemoryError, match=r"generation\.max_new_tokens"):
        generate(model, NoMethod(), samples[:2], batch_size=2, decoding=DECODING, progress=False)


def test_interrupted_run_keeps_finished_batches(tiny_llava, samples, tmp_path, caplog):
    calls = []

    def fault(conversations):
        calls.append(len(conversations))
        if len(calls) == 3:
            raise KeyboardInterrupt

    cache = GenerationCache.in_dir(tmp_path)
    with (
        caplog.at_level(logging.WARNING, logger="calib.generation.generate"),
        pytest.raises(KeyboardInterrupt),
    ):
        generate(
            Recording(tiny_llava, fault),
            NoMethod(),
            samples,
            batch_size=3,
            decoding=DECODING,
            cache=cache,
            progress=False,
        )
    assert "interrupted: 6 of 10 responses" in caplog.text and str(cache.path) in caplog.text
    assert cache.count() == 6
    resumed = generate(
        tiny_llava,
        NoMethod(),
        samples,
        batch_size=3,
        decoding=DECODING,
        cache=cache,
        progress=False,
    )
    assert (resumed.generated, resumed.cached) == (4, 6)
    assert all(isinstance(r, str) for r in resumed.responses)


def test_bad_batch_size_names_the_key(tiny_llava, samples):
    with pytest.raises(ValueError, match=r"generation\.batch_size=0"):
        generate(tiny_llava, NoMethod(), samples, batch_size=0, decoding=DECODING)


def test_base_answers_are_cached_no_method_responses(tiny_llava, samples, tmp_path: Path):
    answers = base_answers(
        tiny_llava, samples[:4], batch_size=2, decoding=DECODING, cache_dir=tmp_path
    )
    model = Recording(tiny_llava)
    again = base_answers(model, samples[:4], batch_size=2, decoding=DECODING, cache_dir=tmp_path)
    assert again == answers and model.calls == []
    # a method=none run with the same settings reuses them
    run = generate(
        model,
        NoMethod(),
        samples[:4],
        batch_size=2,
        decoding=DECODING,
        cache=GenerationCache.in_dir(tmp_path),
        progress=False,
    )
    assert run.cached == 4 and run.responses == answers
