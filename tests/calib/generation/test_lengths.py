"""Prompts longer than the model's context are found before generating (skipped and counted,
or an error), never truncated; a batch's memory is bounded by tokens, not only by count."""

from __future__ import annotations

import pytest

from calib.chat import default_conversation
from calib.cli.common import compose_config
from calib.errors import DataError
from calib.generation.generate import context_length, generate, prompt_tokens
from calib.methods.none import NoMethod
from calib.pipeline import drop_too_long, load_data
from calib.types import Sample
from tests.conftest import TINY_RUN


def text_sample(i: int, words: int) -> Sample:
    return Sample(
        id=f"s{i}",
        prompt=" ".join(["word"] * words) + "?",
        image=None,
        label="safe",
        category="c",
        condition="txt",
        group=f"g{i}",
    )


def test_batches_are_cut_to_the_token_bound(tiny_llava):
    samples = [text_sample(i, 5 + 40 * (i % 3)) for i in range(9)]
    lengths = prompt_tokens(tiny_llava, [default_conversation(s) for s in samples])
    seen: list[list[int]] = []
    original = tiny_llava.generate

    def record(conversations, **decoding):
        seen.append([len(c[-1]["content"][0]["text"]) for c in conversations])
        return original(conversations, **decoding)

    tiny_llava.generate = record
    try:
        bound = 3 * (max(lengths) + 4)  # three of the longest prompts per batch
        done = generate(
            tiny_llava,
            NoMethod(),
            samples,
            batch_size=8,
            decoding={"max_new_tokens": 4, "do_sample": False},
            progress=False,
            max_batch_tokens=bound,
        )
    finally:
        del tiny_llava.generate
    assert len(done.responses) == 9 and done.generated == 9
    assert len(seen[0]) == 3, "the longest prompts come first, three to a batch"
    assert max(len(b) for b in seen) <= 8 and sum(len(b) for b in seen) == 9
    assert len(seen) < 9, "shorter prompts share bigger batches"


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_prompts_beyond_the_context_are_skipped_and_counted_or_an_error(
    tiny_llava, tmp_path, policy
):
    context = context_length(tiny_llava)
    assert context == 4096
    cfg = compose_config(
        [
            *TINY_RUN,
            f"paths.cache_dir={tmp_path}",
            "data.conditions=[txt,typography]",
            f"data.on_too_long={policy}",
            # Room for short prompts only: the typography pictures' image tokens do not fit.
            f"generation.max_new_tokens={context - 60}",
        ]
    )
    splits = load_data(cfg)
    lengths = prompt_tokens(tiny_llava, [default_conversation(s) for s in splits.evaluation])
    expected = sum(n > 60 for n in lengths)
    assert 0 < expected < len(lengths), lengths
    if policy == "error":
        with pytest.raises(DataError, match=r"data\.on_too_long=skip"):
            drop_too_long(cfg, tiny_llava, NoMethod(), splits)
        return
    kept = drop_too_long(cfg, tiny_llava, NoMethod(), splits)
    assert len(kept.evaluation) == len(splits.evaluation) - expected
    assert kept.info["too_long"]["skipped"] >= expected
    assert kept.info["too_long"]["context"] == 4096
    assert all(s.id not in kept.info["too_long"]["ids"] for s in kept.evaluation)
