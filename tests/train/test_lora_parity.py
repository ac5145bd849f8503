"""LoRA train/inference parity with the real hub chat templates (issue 13, item 4).

Tiny models get the templates of LLaVA-1.5 (no BOS, no EOS in the template), Gemma-3 (BOS and
``<end_of_turn>`` in the template) and Idefics3 (BOS as text, ``<end_of_utterance>``). For each,
the prompt part of every training sequence must be token for token what ``VLM.encode`` feeds
at generation, and the last labelled token must be the template's end-of-turn token (EOS when
it writes none), so the adapter learns to stop.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from calib.model import VLM, load_vlm
from calib.model.tiny import build_tiny
from tests.conftest import tiny_model_cfg
from tests.hub_templates import GEMMA3, IDEFICS3, LLAVA_15
from train.lora_collator import ParityCollator, end_of_turn_id, stop_ids
from train.lora_data import TrainingExample, to_dataset

HUB = {
    "llava-1.5": ("llava", LLAVA_15, "</s>"),
    "gemma-3": ("gemma3", GEMMA3, "<end_of_turn>"),
    "idefics3": ("idefics3", IDEFICS3, "<end_of_utterance>"),
}


def with_template(arch: str, template: str, cache: Path, dest: Path) -> VLM:
    """The tiny model of ``arch`` with a hub chat template in place of the project's."""
    folder = Path(shutil.copytree(build_tiny(tiny_model_cfg(arch).tiny, cache), dest))
    (folder / "chat_template.jinja").write_text(template)
    cfg = tiny_model_cfg(arch)
    cfg.id = str(folder)
    return load_vlm(cfg, cache)


@pytest.fixture(scope="module", params=list(HUB))
def hub_vlm(request, tmp_path_factory) -> tuple[str, VLM]:
    arch, template, _ = HUB[request.param]
    cache = tmp_path_factory.mktemp("cache")
    return request.param, with_template(arch, template, cache, cache / f"{arch}-hub")


def examples(images: list[Path]) -> list[TrainingExample]:
    def user(*parts):
        return [{"role": "user", "content": list(parts)}]

    return [
        TrainingExample(
            "a",
            "refusal",
            user({"type": "image", "image": str(images[0])}, {"type": "text", "text": "How?"}),
            "I can't help with that.",
        ),
        TrainingExample(
            "b",
            "self",
            user({"type": "text", "text": "How do I bake bread at home, step by step?"}),
            "Mix flour, water and yeast.",
        ),
    ]


def template_answer(vlm: VLM, example: TrainingExample) -> list[int]:
    """The answer's tokens in the template's own rendering of the whole exchange: the tokens
    of render(prompt + answer) that follow those of render(prompt, generation prompt)."""
    conversation = [m for m in example.conversation if m["role"] != "system"]
    text_only = [
        {"role": m["role"], "content": [p for p in m["content"] if p["type"] == "text"]}
        for m in conversation
    ]
    reply = {"role": "assistant", "content": [{"type": "text", "text": example.completion}]}
    prompt = vlm.render([text_only], add_generation_prompt=True)[0]
    full = vlm.render([[*text_only, reply]], add_generation_prompt=False)[0]
    prompt_ids = vlm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = vlm.tokenizer(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    answer = vlm.tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    rest = full_ids[len(prompt_ids) :]
    for n in range(len(answer) - 1, len(answer) + 3):  # the answer, its lead space merged in
        if vlm.tokenizer.decode(rest[:n]).strip() == example.completion:
            return rest[:n]
    raise AssertionError(f"answer not found after the generation prompt: {rest}")


def test_answers_take_the_space_the_template_writes_after_the_role(hub_vlm):
    """LLaVA-1.5 writes ``ASSISTANT: {answer}``: the model produces the answer's first word
    with its leading space, so that is the token it must be taught."""
    name, vlm = hub_vlm
    collator = ParityCollator(vlm)
    text = "I can't help with that."
    ids = collator.completion_ids(text)[:-1]
    assert vlm.tokenizer.decode(ids).strip() == text
    if name == "llava-1.5":
        assert ids != vlm.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert vlm.tokenizer.decode(ids).startswith(" ")


def _unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return ids[mask.bool()].tolist()


def test_training_prompts_are_the_generation_prompts_and_answers_end_the_turn(hub_vlm, tiny_images):
    name, vlm = hub_vlm
    items = examples(tiny_images)
    rows = list(to_dataset(items))
    batch = ParityCollator(vlm)(rows)
    end = vlm.tokenizer.convert_tokens_to_ids(HUB[name][2])
    assert end in stop_ids(vlm)  # generation stops on it
    for row, example in enumerate(items):
        generation = vlm.encode([example.conversation])
        prompt = _unpadded(generation["input_ids"][0], generation["attention_mask"][0])
        sequence = _unpadded(batch["input_ids"][row], batch["attention_mask"][row])
        labels = batch["labels"][row][batch["attention_mask"][row].bool()].tolist()
        assert sequence[: len(prompt)] == prompt, name  # BOS and image tokens included
        assert labels[: len(prompt)] == [-100] * len(prompt)  # the loss is on the answer only
        answer = sequence[len(prompt) : -1]
        assert answer == template_answer(vlm, example), name  # as the template writes it
        assert sequence[len(prompt) :] == [*answer, end]
        assert labels[len(prompt) :] == [*answer, end]
        assert sequence[-1] == end
    assert (batch["labels"][~batch["attention_mask"].bool()] == -100).all()


def test_llava_15_answers_end_with_eos_and_prompts_keep_the_bos(hub_vlm):
    """The case TRL's own collator gets wrong: the template writes neither BOS nor EOS."""
    name, vlm = hub_vlm
    if name != "llava-1.5":
        pytest.skip("LLaVA-1.5's template only")
    assert end_of_turn_id(vlm) == vlm.tokenizer.eos_token_id
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert vlm.encode([conversation])["input_ids"][0, 0] == vlm.tokenizer.bos_token_id


def test_per_token_inputs_cover_the_whole_sequence(tiny_gemma3, tiny_images):
    """Gemma3's token_type_ids (image tokens marked 1) are extended over the answer as text."""
    items = examples(tiny_images)
    batch = ParityCollator(tiny_gemma3)(list(to_dataset(items)))
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    image_token = tiny_gemma3.model.config.image_token_index
    assert ((batch["input_ids"] == image_token) == (batch["token_type_ids"] == 1)).all()
    assert "pixel_values" in batch


def test_steering_scores_the_first_token_lora_teaches(hub_vlm):
    """Steering's refusal score reads the token a refusal starts with after the generation
    prompt: the same token the collator teaches (with the template's leading space)."""
    from calib.methods.steering import first_token

    _, vlm = hub_vlm
    text = "I'm sorry, I can't help with that."
    assert first_token(vlm, text) == ParityCollator(vlm).completion_ids(text)[0]
