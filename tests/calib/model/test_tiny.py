"""Tiny random VLMs: built from config, cached atomically, deterministic, real processors."""

from __future__ import annotations

import json

import jinja2
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForImageTextToText, AutoProcessor

from calib.model import folder_identity
from calib.model.tiny.build import (
    _CONFIG_BUILDERS,
    _PROCESSOR_BUILDERS,
    MARKER_FILE,
    TinySpec,
    _init_model,
    _train_tokenizer,
    build_tiny,
)
from tests.conftest import CONF_DIR, TINY_MODELS, tiny_model_cfg

ARCHS = list(TINY_MODELS)


def tiny_cfg(arch: str) -> dict:
    return OmegaConf.to_container(tiny_model_cfg(arch).tiny)


@pytest.mark.parametrize("arch", ARCHS)
def test_build_saves_a_loadable_folder_once(arch, tmp_path):
    folder = build_tiny(tiny_cfg(arch), tmp_path)
    assert folder.parent == tmp_path / "tiny" and folder.name.startswith(f"{arch}-")
    for name in ("config.json", "model.safetensors", "tokenizer.json", MARKER_FILE):
        assert (folder / name).is_file(), name
    assert json.loads((folder / MARKER_FILE).read_text()) == tiny_cfg(arch)
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [folder.name]  # no temp left
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(tiny_cfg(arch), tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


@pytest.mark.parametrize("arch", ARCHS)
def test_build_is_deterministic(arch, tmp_path):
    first = build_tiny(tiny_cfg(arch), tmp_path / "a")
    second = build_tiny(tiny_cfg(arch), tmp_path / "b")
    assert first.name == second.name
    assert folder_identity(first) == folder_identity(second)


def test_a_changed_config_builds_a_new_model(tmp_path):
    base = build_tiny(tiny_cfg("llava"), tmp_path)
    reseeded = build_tiny({**tiny_cfg("llava"), "seed": 1}, tmp_path)
    assert reseeded != base
    assert folder_identity(reseeded) != folder_identity(base)


def test_invalid_config_names_every_problem(tmp_path):
    cfg = {**tiny_cfg("llava"), "arch": "qwen", "colour": "blue"}
    del cfg["seed"]
    with pytest.raises(ValueError) as err:
        build_tiny(cfg, tmp_path)
    message = str(err.value)
    assert "model.tiny.seed is missing" in message
    assert "model.tiny.colour is not a known key" in message
    with pytest.raises(ValueError, match=r"model.tiny.arch='qwen' must be one of"):
        build_tiny({**tiny_cfg("llava"), "arch": "qwen"}, tmp_path)
    with pytest.raises(ValueError, match=r"model\.tiny\.image_size"):
        build_tiny({**tiny_cfg("llava"), "image_size": 30}, tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_reloaded_model_has_the_weights_built_in_memory(arch, tmp_path):
    spec = TinySpec.from_config(tiny_cfg(arch))
    processor = _PROCESSOR_BUILDERS[arch](spec, _train_tokenizer(spec))
    built = _init_model(_CONFIG_BUILDERS[arch](spec, processor.tokenizer), spec.seed)
    reloaded = AutoModelForImageTextToText.from_pretrained(build_tiny(tiny_cfg(arch), tmp_path))
    assert type(reloaded) is type(built)
    assert reloaded.config.get_text_config().num_hidden_layers == spec.num_layers
    expected = built.state_dict()
    for name, weight in reloaded.state_dict().items():
        assert torch.equal(weight, expected[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_is_small_left_padded_and_knows_its_special_tokens(arch, tmp_path):
    processor = AutoProcessor.from_pretrained(build_tiny(tiny_cfg(arch), tmp_path))
    tokenizer = processor.tokenizer
    assert len(tokenizer) <= tiny_cfg(arch)["vocab_size"]
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    refusal = "I'm sorry, I cannot help with that."
    ids = tokenizer(refusal, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == refusal
    assert len(ids) < len(refusal) / 2  # the BPE learned merges for the corpus words
    image_token = processor.image_token
    assert len(tokenizer(image_token, add_special_tokens=False)["input_ids"]) == 1


CHAT = [
    {"role": "system", "content": [{"type": "text", "text": "Be careful."}]},
    {
        "role": "user",
        "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "Hi"}],
    },
]


@pytest.mark.parametrize(
    ("arch", "placeholder"),
    [("llava", "<image>"), ("idefics3", "<image>"), ("gemma3", "<start_of_image>")],
)
def test_chat_templates_render_images_and_the_generation_prompt(arch, placeholder, tmp_path):
    processor = AutoProcessor.from_pretrained(build_tiny(tiny_cfg(arch), tmp_path))
    user_only = CHAT[1:]
    text = processor.apply_chat_template(user_only, add_generation_prompt=True, tokenize=False)
    assert text.count(placeholder) == 1 and "Hi" in text
    bare = processor.apply_chat_template(user_only, add_generation_prompt=False, tokenize=False)
    assert text.startswith(bare) and len(text) > len(bare)
    plain = [{"role": "user", "content": "Hi there"}]  # string content works too
    assert "Hi there" in processor.apply_chat_template(plain, tokenize=False)
    if arch == "gemma3":
        with pytest.raises(jinja2.TemplateError, match="System role not supported"):
            processor.apply_chat_template(CHAT, tokenize=False)
    else:
        assert "Be careful." in processor.apply_chat_template(CHAT, tokenize=False)


def test_bench_preset_has_tens_of_millions_of_parameters():
    spec = TinySpec.from_config(OmegaConf.load(CONF_DIR / "model" / "tiny_bench.yaml").tiny)
    config = _CONFIG_BUILDERS[spec.arch](spec, _train_tokenizer(spec))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    assert 10e6 < n_params < 100e6
