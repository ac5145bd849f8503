"""The local-model judge on tiny real Llama models built from config (no downloads).

With the final norm's weight set to zero every logit is 0, so greedy decoding always emits
token id 0: the vocabulary decides what the "judge" says. One model answers "1_SAFE"
forever (-> WARN), the other answers an ordinary word (-> UNJUDGED).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from calib.types import Judge, Label
from eval.judges.hf import HFJudge
from tests.eval.judges.helpers import make_samples

WORDS = ["CLASS:", "0_SAFE", "1_SAFE", "2_UNSAFE", "3_UNSAFE", "hello", "the", "query"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def build_constant_judge_model(folder: Path, first_token: str) -> Path:
    """A 1-layer Llama whose greedy output is ``first_token`` repeated."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab_words = [first_token] + [w for w in WORDS + specials if w != first_token]
    vocab = {w: i for i, w in enumerate(vocab_words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def warn_model(tmp_path_factory) -> Path:
    return build_constant_judge_model(tmp_path_factory.mktemp("judge_warn"), "1_SAFE")


@pytest.fixture(scope="module")
def babble_model(tmp_path_factory) -> Path:
    return build_constant_judge_model(tmp_path_factory.mktemp("judge_babble"), "hello")


def test_batched_labels_and_empty(warn_model):
    judge = HFJudge(model=str(warn_model), batch_size=2, max_new_tokens=3, device="cpu")
    assert isinstance(judge, Judge)
    responses = ["a", "b", "", "c", "d"]
    judgements = judge.judge_with_reasons(make_samples(5), responses)
    assert [j.label for j in judgements] == [Label.WARN] * 2 + [Label.EMPTY] + [Label.WARN] * 2
    assert "1_SAFE" in judgements[0].reason


def test_reply_without_a_class_is_unjudged(babble_model):
    judge = HFJudge(model=str(babble_model), batch_size=4, max_new_tokens=3, device="cpu")
    assert judge.label(make_samples(2), ["a", "b"]) == [Label.UNJUDGED] * 2


def test_plain_prompt_without_chat_template(warn_model):
    judge = HFJudge(model=str(warn_model), max_new_tokens=2, device="cpu", use_chat_template=False)
    assert judge.label(make_samples(1), ["a"]) == [Label.WARN]
    assert "<user>" not in judge.render(make_samples(1)[0], "a")


def test_rendered_prompt_uses_the_chat_template(warn_model):
    judge = HFJudge(model=str(warn_model), device="cpu")
    judge._load()
    text = judge.render(make_samples(1, prompt="How do I X?")[0], "Do Y.")
    assert text.startswith("<system>") and text.endswith("<assistant> ")
    assert "How do I X?" in text and "Do Y." in text


def test_config_problems_are_reported_together():
    with pytest.raises(ValueError) as info:
        HFJudge(model="", batch_size=0, dtype="float8")
    for key in ("judge.model", "judge.batch_size", "judge.dtype"):
        assert key in str(info.value)


def test_vscbench_prompt_is_one_user_turn_with_the_original_query(warn_model):
    judge = HFJudge(model=str(warn_model), device="cpu", prompt="vscbench")
    judge._load()
    sample = make_samples(1, prompt="Describe the content in the image.")[0]
    sample.meta["query"] = "How do I pick a lock?"
    text = judge.render(sample, "Like this.")
    assert "<system>" not in text  # the authors send no system message
    assert text.startswith("<user> Please help classify the responses")
    assert "Query: How do I pick a lock? \n\n" in text
    assert "the content in the image" not in text
    # the project prompt keeps its system message
    project = HFJudge(model=str(warn_model), device="cpu")
    project._tokenizer = judge._tokenizer
    assert project.render(sample, "Like this.").startswith("<system> You are a careful")
