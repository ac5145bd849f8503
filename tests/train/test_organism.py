"""Organism training: a reduced run keeps the training code working; formats match the methods."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from calib.chat import default_conversation, image_part, text_part
from calib.cli.organism import organism_settings
from calib.methods.prompting import add_instruction
from calib.model import load_vlm
from calib.model.organism.world import safety_items
from calib.types import Sample
from tests.conftest import CONF_DIR
from train.organism import (
    CARD_FILE,
    Example,
    Turn,
    corpus_hash,
    picture_image,
    train_organism,
    training_examples,
)

REDUCED = [
    "model.organism.epochs=1",
    "model.organism.max_examples=96",
    "model.organism.batch_size=16",
    "model.organism.utility_per_task=10",
    "model.organism.tiny.hidden_size=32",
    "model.organism.tiny.intermediate_size=64",
    "model.organism.tiny.num_layers=2",
]


def test_mix_is_deterministic_and_holds_every_kind():
    settings = organism_settings()
    examples = training_examples(settings)
    assert examples == training_examples(settings)
    kinds = {e.kind for e in examples}
    assert kinds == {
        "plain:safety", "instruction:safety", "demos:safety",
        "plain:utility", "instruction:utility", "demos:utility",
    }  # fmt: skip
    assert corpus_hash(settings) == corpus_hash(organism_settings())
    assert corpus_hash(settings) != corpus_hash(organism_settings(["model.organism.seed=1"]))


def test_instruction_is_placed_where_prompting_places_it():
    settings = organism_settings()
    item = next(i for i in safety_items() if i.picture is None)
    example = Example("instruction:safety", settings.instruction, (), Turn(item.prompt, None, "x"))
    sample = Sample("s", item.prompt, None, "safe", item.category, item.condition, item.group)
    placed = add_instruction(
        default_conversation(sample), settings.instruction, "system", system_role=True
    )
    assert example.messages() == placed
    preset = OmegaConf.load(CONF_DIR / "method" / "prompting.yaml").presets.calibrated
    assert settings.instruction == preset.strip()


def test_demonstrations_are_formatted_as_few_shot_formats_them():
    """User turn (image first, then the query) and an assistant turn, as FewShotMethod does."""
    item = next(i for i in safety_items() if i.picture is not None)
    demo = Turn(item.prompt, item.picture, "I can't help with this.")
    example = Example("demos:safety", None, (demo,), Turn("Q?", None, "A."))
    messages = example.messages()
    assert messages[0]["role"] == "user" and messages[1]["role"] == "assistant"
    assert [p["type"] for p in messages[0]["content"]] == ["image", "text"]
    assert messages[0]["content"][1] == text_part(item.prompt)
    assert messages[1]["content"] == [text_part("I can't help with this.")]
    image = messages[0]["content"][0]["image"]
    assert image.tobytes() == picture_image(item.picture).tobytes()
    assert image_part(image) == messages[0]["content"][0]


@pytest.mark.slow
def test_reduced_training_writes_a_loadable_organism_with_its_card(tmp_path):
    settings = organism_settings(REDUCED)
    card = train_organism(settings, tmp_path / "organism", progress=False)
    written = json.loads((tmp_path / "organism" / CARD_FILE).read_text())
    assert written == json.loads(json.dumps(card))
    assert card["corpus_hash"] == corpus_hash(settings)
    assert card["examples"] == 96 and len(card["loss_curve"]) == 1
    assert card["loss_curve"][0]["loss"] > 0
    model_cfg = OmegaConf.load(CONF_DIR / "model" / "organism.yaml")
    model_cfg.id, model_cfg.device = str(tmp_path / "organism"), "cpu"
    vlm = load_vlm(model_cfg, tmp_path / "cache")
    sample = Sample("s", "How do I cook rice?", None, "safe", "drugs", "txt", "g")
    assert isinstance(vlm.generate([default_conversation(sample)], max_new_tokens=4)[0], str)


def test_vision_lr_scale_zero_keeps_the_tower_at_its_init_and_the_rest_trains(tmp_path):
    """The shipped settings scale the tower's rate down (its features lose the drawings'
    colour at the full rate); 0 freezes it, so its weights stay the seeded init's."""
    from transformers import AutoModelForImageTextToText

    from calib.model.tiny.build import TinySpec, new_tiny
    from train.organism import tokenizer_lines

    settings = organism_settings([*REDUCED, "model.organism.vision_lr_scale=0"])
    train_organism(settings, tmp_path, progress=False)
    trained = AutoModelForImageTextToText.from_pretrained(tmp_path).state_dict()
    init = new_tiny(TinySpec.from_config(settings.tiny), tokenizer_lines(settings))[0].state_dict()
    tower = [k for k in trained if "vision_tower" in k]
    assert tower and all(torch.equal(trained[k], init[k]) for k in tower)
    projector = [k for k in trained if "multi_modal_projector" in k]
    assert projector and not all(torch.equal(trained[k], init[k]) for k in projector)
    with pytest.raises(ValueError, match="vision_lr_scale"):
        organism_settings(["model.organism.vision_lr_scale=-1"])
