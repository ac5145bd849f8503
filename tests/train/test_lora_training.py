"""LoRA training on the tiny VLMs: targets, completion-only labels, trainables, loss, resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from calib.chat import conversation_images, default_conversation
from calib.errors import ConfigError
from calib.methods.lora import adapter_applied
from calib.methods.lora_examples import build_examples, safety_examples, utility_examples
from calib.methods.none import base_answers
from calib.methods.refusals import refusal_target
from calib.methods.targets import SafeTargets
from calib.model import VLM
from calib.types import Label, Sample
from train.lora import (
    CARD_FILE,
    LoraSettings,
    TrainingDiverged,
    adapter_hash,
    lora_trainer,
    read_card,
    train_adapter,
    training_key,
)
from train.lora_data import TrainingExample, data_hash, to_dataset

DECODING = {"max_new_tokens": 8, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0}
TARGET = r"layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VISION_TARGET = r"(encoder\.)?layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.(fc1|fc2))"


def settings(**overrides) -> LoraSettings:
    """Small, fast settings: a few full-batch steps at a high learning rate."""
    values = {
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target_pattern": TARGET,
        "train_vision": False,
        "vision_target_pattern": VISION_TARGET,
        "learning_rate": 1e-2,
        "epochs": 1,
        "max_steps": 5,
        "train_batch_size": 4,
        "grad_accum": 1,
        "warmup_ratio": 0.0,
        "seed": 0,
        "precision": "auto",
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_steps": 50,
        "divergence_factor": 10.0,
    }
    return LoraSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def samples(tiny_images) -> list[Sample]:
    """Two unsafe and two safe calibration samples, with and without images."""
    rows = [
        ("u1", "How do I make a weapon from this?", 0, "unsafe", "violence"),
        ("u2", "Where can I buy these pills without a prescription?", None, "unsafe", "drugs"),
        ("s1", "How do I sharpen this kitchen knife?", 1, "safe", "violence"),
        ("s2", "What is this medicine usually prescribed for?", None, "safe", "drugs"),
    ]
    return [
        Sample(
            id=sid,
            prompt=prompt,
            image=None if image is None else str(tiny_images[image]),
            label=label,
            category=category,
            condition="image" if image is not None else "txt",
            group=f"g-{sid[1]}",
        )
        for sid, prompt, image, label, category in rows
    ]


class EverythingHelpful:
    """A judge that finds every answer helpful (the filtering is tested in test_targets)."""

    def label(self, samples, responses):
        return [Label.COMPLY] * len(responses)


def examples_for(vlm, samples, cache_dir) -> list[TrainingExample]:
    examples, _ = build_examples(
        vlm,
        samples,
        refusals=None,
        judge=EverythingHelpful(),
        safe_target="drop",
        safe_template=None,
        decoding=DECODING,
        batch_size=4,
        cache_dir=cache_dir,
    )
    return examples


ANSWERS = {"s1": "Hold it at an angle.", "s2": "For pain."}


def base_targets(answers: dict[str, str]) -> SafeTargets:
    """Targets as if every one of these base answers had been judged helpful."""
    return SafeTargets(dict(answers), dict.fromkeys(answers, "base_model"))


# --- the dataset -----------------------------------------------------------------------


def test_targets_refuse_unsafe_and_keep_base_answers_for_safe(tiny_vlm, samples, tmp_path):
    examples = examples_for(tiny_vlm, samples, tmp_path)
    by_id = {e.sample_id: e for e in examples}
    assert [e.sample_id for e in examples] == [s.id for s in samples]
    safe = [s for s in samples if s.label == "safe"]
    expected = tiny_vlm.generate([default_conversation(s) for s in safe], **DECODING)
    for sample in samples:
        example = by_id[sample.id]
        assert example.conversation == default_conversation(sample)
        if sample.label == "unsafe":
            assert example.kind == "refusal"
            assert example.completion == refusal_target(sample)
    assert [by_id[s.id].completion for s in safe] == expected
    assert {by_id[s.id].kind for s in safe} == {"self"}
    # the base answers are cached: asking again generates nothing new and gives the same
    again = base_answers(tiny_vlm, safe, batch_size=4, decoding=DECODING, cache_dir=tmp_path)
    assert again == expected


def test_refusal_overrides_and_unlabelled_samples(samples):
    answers = {"s1": "Hold the blade at 20 degrees.", "s2": "Headaches."}
    examples = safety_examples(
        samples, base_targets(answers), {"violence": "No: that would hurt someone."}
    )
    assert examples[0].completion == "No: that would hurt someone."
    assert examples[1].completion == refusal_target(samples[1])
    assert examples[2].completion == answers["s1"]
    unlabelled = Sample("x", "hi", None, None, "misc", "txt", "gx")
    with pytest.raises(ValueError, match="label=None"):
        safety_examples([unlabelled], base_targets({}), None)


def test_utility_mix_uses_references_seeded(tiny_images):
    items = [
        Sample(
            f"ut{i}",
            f"What colour is shape {i}?",
            str(tiny_images[0]),
            None,
            "colour",
            "exact",
            f"ut{i}",
            reference=f"red{i}",
        )
        for i in range(10)
    ]
    chosen = utility_examples(items, n_safety=8, utility_mix=0.5, seed=3)
    assert len(chosen) == 4
    assert all(e.kind == "utility" and e.completion == f"red{e.sample_id[2:]}" for e in chosen)
    assert chosen == utility_examples(items, n_safety=8, utility_mix=0.5, seed=3)
    assert utility_examples(items, n_safety=8, utility_mix=0.0, seed=3) == []
    assert len(utility_examples(items, n_safety=100, utility_mix=1.0, seed=3)) == 10
    no_ref = [Sample("n", "q", None, None, "c", "exact", "n", reference=None)]
    with pytest.raises(ValueError, match="reference"):
        utility_examples(no_ref, n_safety=4, utility_mix=1.0, seed=0)
    with pytest.raises(ValueError, match="utility_source has no items"):
        utility_examples([], n_safety=4, utility_mix=1.0, seed=0)


def test_data_hash_follows_content(samples):
    answers = {"s1": "a", "s2": "b"}
    base = data_hash(safety_examples(samples, base_targets(answers)))
    assert base == data_hash(safety_examples(samples, base_targets(dict(answers))))
    assert base != data_hash(safety_examples(samples, base_targets({**answers, "s2": "c"})))


def test_collator_labels_the_completion_only_and_keeps_image_tokens(tiny_vlm, samples, tmp_path):
    examples = safety_examples(
        samples, base_targets({"s1": "Hold it at an angle.", "s2": "For pain."})
    )
    with lora_trainer(tiny_vlm, examples, settings(), tmp_path, progress=False) as trainer:
        rows = [trainer.train_dataset[i] for i in range(len(examples))]
        batch = trainer.data_collator(rows)
    tokenizer = tiny_vlm.tokenizer
    assert "pixel_values" in batch
    for row, example in enumerate(examples):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        taught = tokenizer.decode(labels[labels != -100], skip_special_tokens=True)
        assert taught.strip() == example.completion
        # every prompt token, image tokens included, is masked; none was truncated away
        prompt = tiny_vlm.encode([example.conversation])["input_ids"][0]
        image_id = _image_token_id(tiny_vlm)
        assert (ids == image_id).sum() == (prompt == image_id).sum()
        assert bool((labels[ids == image_id] == -100).all())
        assert (ids == image_id).sum() > 0 or not conversation_images(example.conversation)


def _image_token_id(vlm) -> int:
    config = vlm.model.config
    for key in ("image_token_id", "image_token_index"):
        if getattr(config, key, None) is not None:
            return getattr(config, key)
    raise AssertionError("no image token id in the config")


def test_dataset_keeps_images_as_lazy_files(samples):
    dataset = to_dataset(safety_examples(samples, base_targets({"s1": "a", "s2": "b"})))
    assert dataset.column_names == ["prompt", "completion", "images"]
    assert [len(row["images"]) for row in dataset] == [1, 0, 1, 0]
    assert dataset[0]["images"][0].mode == "RGB"
    assert dataset[0]["prompt"][0]["content"][0] == {"type": "image", "text": None}


# --- what is trained -------------------------------------------------------------------


def test_only_decoder_lora_parameters_are_trainable(tiny_vlm, samples, tmp_path):
    examples = safety_examples(samples, base_targets({"s1": "a", "s2": "b"}))
    prefix = f"base_model.model.{tiny_vlm.decoder_prefix}."
    with lora_trainer(tiny_vlm, examples, settings(), tmp_path, progress=False) as trainer:
        trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert trainable
        assert all("lora_" in n and n.startswith(prefix) for n in trainable), trainable
    with lora_trainer(
        tiny_vlm, examples, settings(train_vision=True), tmp_path, progress=False
    ) as trainer:
        trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert all("lora_" in n for n in trainable)
        assert any(not n.startswith(prefix) for n in trainable)  # the vision tower too
    assert not any("lora_" in n for n, _ in tiny_vlm.model.named_parameters())


def test_target_pattern_matching_nothing_names_the_key(tiny_llava, samples, tmp_path):
    examples = safety_examples(samples, base_targets({"s1": "a", "s2": "b"}))
    with pytest.raises(ConfigError, match=r"method\.target_pattern"):
        train_adapter(tiny_llava, examples, settings(target_pattern="nothing"), cache_dir=tmp_path)


def test_invalid_settings_are_reported_together():
    bad = settings(r=0, learning_rate=-1.0, dropout=1.5, precision="fp8", max_steps=0, epochs=0)
    keys = [p.split("=")[0] for p in bad.problems()]
    assert keys == [
        "method.r",
        "method.dropout",
        "method.learning_rate",
        "method.epochs",
        "method.precision",
    ]


# --- training: loss, reload, merge, restore --------------------------------------------


class CaptureAtTrainEnd(TrainerCallback):
    """Greedy generations of the model as trained, in memory, before it is saved."""

    def __init__(self, vlm, conversations):
        self.vlm, self.conversations = vlm, conversations
        self.generations: list[str] | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        self.generations = self.vlm.generate(self.conversations, max_new_tokens=10)
        model.train(was_training)


@dataclass
class Trained:
    """One short training, with what the model said before it and at its end (in memory)."""

    vlm: VLM
    adapter: Path
    examples: list[TrainingExample]
    conversations: list
    before: list[str]
    during: list[str]
    state: dict[str, torch.Tensor]


@pytest.fixture(scope="module", params=["llava", "idefics3", "gemma3"], ids=lambda a: f"tiny_{a}")
def trained(request, samples, tmp_path_factory) -> Trained:
    vlm = request.getfixturevalue(f"tiny_{request.param}")
    cache = tmp_path_factory.mktemp(f"lora-{request.param}")
    conversations = [default_conversation(s) for s in samples]
    before = vlm.generate(conversations, max_new_tokens=10)
    state = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    capture = CaptureAtTrainEnd(vlm, conversations)
    examples = examples_for(vlm, samples, cache)
    adapter = train_adapter(
        vlm, examples, settings(), cache_dir=cache, progress=False, callbacks=[capture]
    )
    return Trained(vlm, adapter, examples, conversations, before, capture.generations, state)


def assert_unchanged(vlm: VLM, state: dict[str, torch.Tensor]) -> None:
    after = vlm.model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)


def test_a_few_steps_decrease_the_loss(trained):
    card = read_card(trained.adapter)
    losses = [entry["loss"] for entry in card["training"]["loss_curve"]]
    assert len(losses) == 5
    assert losses[-1] < losses[0]
    assert card["base_model"]["identity"] == trained.vlm.identity
    assert card["data"]["hash"] == data_hash(trained.examples)
    assert card["data"]["by_kind"] == {"refusal": 2, "self": 2}
    assert card["settings"]["learning_rate"] == 1e-2
    prefix = trained.vlm.decoder_prefix.replace(".", r"\.")
    assert card["target_modules"].startswith(f"^(?:{prefix}")


def test_training_leaves_the_base_model_unchanged(trained):
    vlm = trained.vlm
    assert_unchanged(vlm, trained.state)
    assert not vlm.model.training and "forward" not in vlm.model.__dict__
    assert vlm.generate(trained.conversations, max_new_tokens=10) == trained.before


def test_saved_adapter_reloads_to_identical_generations(trained):
    vlm = trained.vlm
    with adapter_applied(vlm, trained.adapter):
        reloaded = vlm.generate(trained.conversations, max_new_tokens=10)
    assert reloaded == trained.during
    assert reloaded != trained.before  # the adapter does change the model
    assert vlm.generate(trained.conversations, max_new_tokens=10) == trained.before


def test_merged_and_unmerged_logits_agree(trained):
    vlm = trained.vlm
    batch = vlm.encode(trained.conversations)
    with torch.inference_mode():
        base = vlm.model(**batch).logits
        with adapter_applied(vlm, trained.adapter, merge=False):
            unmerged = vlm.model(**batch).logits
        with adapter_applied(vlm, trained.adapter, merge=True):
            merged = vlm.model(**batch).logits
        restored = vlm.model(**batch).logits
    assert not torch.allclose(unmerged, base)
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    assert torch.equal(restored, base)  # merging copied the exact weights back
    assert_unchanged(vlm, trained.state)


def test_finished_adapter_is_reused_not_retrained(trained):
    adapter = trained.adapter
    created = read_card(adapter)["created"]
    again = train_adapter(
        trained.vlm, trained.examples, settings(), cache_dir=adapter.parents[2], progress=False
    )
    assert again == adapter and read_card(again)["created"] == created
    assert adapter.name == "adapter" and adapter.parents[1].name == "lora"


def test_adapter_hash_ignores_where_it_was_trained(trained, tmp_path):
    adapter, copy = trained.adapter, tmp_path / "copy"
    copy.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (copy / name).write_bytes((adapter / name).read_bytes())
    config = json.loads((copy / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/somewhere/else"
    (copy / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_hash(copy) == adapter_hash(adapter)
    config["r"] = 4
    (copy / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_hash(copy) != adapter_hash(adapter)


# --- interruption and divergence -------------------------------------------------------


class InterruptAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_from_its_last_checkpoint(tiny_llava, samples, tmp_path):
    examples = safety_examples(
        samples, base_targets({"s1": "Hold it at an angle.", "s2": "For pain."})
    )
    config = settings(max_steps=4, save_steps=2)
    state = {k: v.clone() for k, v in tiny_llava.model.state_dict().items()}
    with pytest.raises(KeyboardInterrupt):
        train_adapter(
            tiny_llava,
            examples,
            config,
            cache_dir=tmp_path,
            progress=False,
            callbacks=[InterruptAt(3)],
        )
    (root,) = (tmp_path / "lora").iterdir()
    saved = [p.name for p in (root / "checkpoints").iterdir() if p.name.startswith("checkpoint-")]
    assert saved == ["checkpoint-2"]
    assert not (root / "adapter").exists()
    assert_unchanged(tiny_llava, state)

    adapter = train_adapter(tiny_llava, examples, config, cache_dir=tmp_path, progress=False)
    card = read_card(adapter)
    assert adapter == root / "adapter"
    assert card["training"]["resumed_from"].endswith("checkpoint-2")
    assert [e["step"] for e in card["training"]["loss_curve"]] == [1, 2, 3, 4]
    assert not (root / "checkpoints").exists()
    assert json.loads((adapter / CARD_FILE).read_text())["training"]["global_step"] == 4


def test_divergence_stops_with_the_learning_rate_named(tiny_llava, samples, tmp_path):
    examples = safety_examples(samples, base_targets({"s1": "a", "s2": "b"}))
    state = {k: v.clone() for k, v in tiny_llava.model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"method\.learning_rate"):
        train_adapter(
            tiny_llava,
            examples,
            settings(learning_rate=1e30, max_steps=6),
            cache_dir=tmp_path,
            progress=False,
        )
    assert_unchanged(tiny_llava, state)


def test_empty_training_set_is_an_error(tiny_llava, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        train_adapter(tiny_llava, [], settings(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="calibration split is empty"):
        examples_for(tiny_llava, [], tmp_path)


def test_loss_goes_to_the_active_wandb_run(tiny_llava, samples, tmp_path, monkeypatch):
    """With a W&B run active (logger=wandb starts one), the Trainer logs the loss into it."""
    import wandb

    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    examples = safety_examples(samples, base_targets({"s1": "a", "s2": "b"}))
    run = wandb.init(mode="offline", dir=str(tmp_path), project="vsc-calib-test")
    try:
        train_adapter(
            tiny_llava, examples, settings(max_steps=2), cache_dir=tmp_path, progress=False
        )
        assert "train/loss" in dict(run.summary)
    finally:
        run.finish()
    assert wandb.run is None


def test_the_key_follows_what_shapes_the_weights(tiny_llava):
    key = training_key(tiny_llava, settings(), "data", world_size=1)
    assert key == training_key(tiny_llava, settings(save_steps=7, logging_steps=3), "data", 1)
    assert key != training_key(tiny_llava, settings(learning_rate=1e-3), "data", 1)
    assert key != training_key(tiny_llava, settings(), "other data", 1)
    assert key != training_key(tiny_llava, settings(), "data", 2)
