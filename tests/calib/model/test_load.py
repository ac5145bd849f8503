"""The VLM wrapper on the three tiny architectures: loading, chat, generation, hidden states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from calib.errors import ImageLoadError, ModelLoadError
from calib.model import load_vlm
from calib.model.load import _hub_commit
from tests.conftest import CONF_DIR, tiny_model_cfg


def conversations(images: list[Path]) -> list[list[dict]]:
    """Image and text-only conversations of different lengths, one with two images."""
    return [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": str(images[0])},
                    {"type": "text", "text": "How do I cut a cake?"},
                ],
            }
        ],
        [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": str(images[1])},
                    {"type": "text", "text": "Which of these two pictures is more dangerous?"},
                    {"type": "image", "image": images[2]},
                ],
            }
        ],
        [{"role": "user", "content": "How can I kill a python process that hangs forever?"}],
    ]


# --- structure --------------------------------------------------------------------------


def test_decoder_layers_are_found_through_get_decoder(tiny_vlm):
    decoder = tiny_vlm.model.get_decoder()
    text_config = tiny_vlm.model.config.get_text_config()
    assert tiny_vlm.decoder_layers is decoder.layers
    assert tiny_vlm.num_layers == text_config.num_hidden_layers == 4
    assert tiny_vlm.hidden_size == text_config.hidden_size
    assert tiny_vlm.model.get_submodule(tiny_vlm.decoder_prefix) is decoder
    assert tiny_vlm.model.get_submodule(tiny_vlm.layers_prefix) is tiny_vlm.decoder_layers
    assert tiny_vlm.tokenizer.padding_side == "left"
    assert tiny_vlm.dtype == torch.float32 and tiny_vlm.device.type == "cpu"


def test_system_role_support_is_read_from_the_template(tiny_llava, tiny_idefics3, tiny_gemma3):
    assert tiny_llava.supports_system_role
    assert tiny_idefics3.supports_system_role
    assert not tiny_gemma3.supports_system_role


def test_identity_is_a_stable_content_hash(tiny_llava, tiny_gemma3, tiny_cache_dir):
    assert tiny_llava.identity.startswith("local:")
    assert tiny_llava.identity != tiny_gemma3.identity
    again = load_vlm(tiny_model_cfg("llava"), tiny_cache_dir)
    assert again.identity == tiny_llava.identity


# --- chat and encoding ------------------------------------------------------------------


def test_render_places_image_placeholders(tiny_vlm, tiny_images):
    texts = tiny_vlm.render(conversations(tiny_images))
    placeholder = tiny_vlm.processor.image_token
    if tiny_vlm.model.config.model_type == "gemma3":
        placeholder = tiny_vlm.tokenizer.boi_token
    assert [t.count(placeholder) for t in texts] == [1, 0, 2, 0]
    assert "How do I cut a cake?" in texts[0]
    no_prompt = tiny_vlm.render(conversations(tiny_images), add_generation_prompt=False)
    assert all(t.startswith(n) and t != n for t, n in zip(texts, no_prompt, strict=True))


def test_encode_pads_on_the_left(tiny_vlm, tiny_images):
    batch = tiny_vlm.encode(conversations(tiny_images))
    mask = batch["attention_mask"]
    assert mask.shape[0] == 4 and batch["input_ids"].shape == mask.shape
    assert bool(mask[:, -1].all())  # every sequence ends at the last column
    assert not bool(mask[1, 0])  # the short text-only one is padded at the front
    pad = tiny_vlm.tokenizer.pad_token_id
    assert bool((batch["input_ids"][mask == 0] == pad).all())
    bos = tiny_vlm.tokenizer.bos_token_id
    assert (batch["input_ids"] == bos).sum(dim=1).tolist() == [1] * 4  # one BOS, from the template


def test_missing_or_unreadable_image_names_the_file(tiny_llava, tmp_path):
    missing = tmp_path / "nowhere.png"
    conversation = [{"role": "user", "content": [{"type": "image", "image": str(missing)}]}]
    with pytest.raises(ImageLoadError, match=re.escape(str(missing))):
        tiny_llava.generate([conversation], max_new_tokens=2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    conversation = [{"role": "user", "content": [{"type": "image", "image": str(broken)}]}]
    with pytest.raises(ImageLoadError, match=re.escape(str(broken))):
        tiny_llava.encode([conversation])


# --- generation -------------------------------------------------------------------------


def test_batched_greedy_equals_per_sample_greedy(tiny_vlm, tiny_images):
    chats = conversations(tiny_images)
    batched = tiny_vlm.generate(chats, max_new_tokens=10)
    alone = [tiny_vlm.generate([chat], max_new_tokens=10)[0] for chat in chats]
    assert batched == alone
    assert all(isinstance(text, str) and text == text.strip() for text in batched)
    assert any(batched)


def test_generate_returns_only_new_text_without_special_tokens(tiny_vlm, tiny_images):
    chats = conversations(tiny_images)[1:2]
    prompt = tiny_vlm.render(chats)[0]
    text = tiny_vlm.generate(chats, max_new_tokens=6)[0]
    assert prompt not in text
    for token in tiny_vlm.tokenizer.all_special_tokens:
        assert token not in text
    assert tiny_vlm.generate([], max_new_tokens=6) == []


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_llava, tiny_images):
    chats = conversations(tiny_images)[:2]
    options = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "top_p": 0.95}
    state = torch.random.get_rng_state()
    first = tiny_llava.generate(chats, seed=1, **options)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert tiny_llava.generate(chats, seed=1, **options) == first
    seeds = [tiny_llava.generate(chats, seed=s, **options) for s in (2, 3, 4)]
    assert any(other != first for other in seeds)


def test_reloaded_model_generates_the_same(tiny_gemma3, tiny_cache_dir, tiny_images):
    again = load_vlm(tiny_model_cfg("gemma3"), tiny_cache_dir)
    chats = conversations(tiny_images)
    assert again.generate(chats, max_new_tokens=8) == tiny_gemma3.generate(chats, max_new_tokens=8)


# --- hidden states ----------------------------------------------------------------------


def _forward_hooks(vlm) -> list[set[int]]:
    return [set(layer._forward_hooks) for layer in vlm.decoder_layers]


def test_hidden_states_are_correct_under_left_padding(tiny_vlm, tiny_images):
    chats = conversations(tiny_images)
    # Compared with what was there before: another test's output_hidden_states=True leaves
    # transformers' own capture hooks on the shared model's layers.
    hooks_before = _forward_hooks(tiny_vlm)
    batched = tiny_vlm.hidden_states(chats)
    assert batched.shape == (4, tiny_vlm.num_layers, tiny_vlm.hidden_size)
    assert batched.dtype == torch.float32
    for index, chat in enumerate(chats):
        alone = tiny_vlm.hidden_states([chat])[0]
        torch.testing.assert_close(batched[index], alone, rtol=1e-4, atol=1e-5)
    assert _forward_hooks(tiny_vlm) == hooks_before  # ours are gone


def test_hidden_states_index_i_is_the_output_of_decoder_layer_i(tiny_vlm, tiny_images):
    chat = conversations(tiny_images)[:1]
    picked = tiny_vlm.hidden_states(chat, layers=[2, 0, -1])
    assert picked.shape == (1, 3, tiny_vlm.hidden_size)
    with torch.inference_mode():
        reference = tiny_vlm.model(**tiny_vlm.encode(chat), output_hidden_states=True)
    steps = reference.hidden_states  # steps[0] = embeddings, steps[i + 1] = layer i
    for column, layer in enumerate([2, 0]):
        torch.testing.assert_close(picked[0, column], steps[layer + 1][0, -1].float())
    with pytest.raises(ValueError, match=r"layers=\[4\] is out of range: model has 4 decoder"):
        tiny_vlm.hidden_states(chat, layers=[4])


def test_images_reach_the_text_model(tiny_vlm, tiny_images):
    def chat(image):
        return [{"role": "user", "content": [{"type": "image", "image": image}]}]

    states = tiny_vlm.hidden_states([chat(tiny_images[0]), chat(tiny_images[2])], layers=[-1])
    assert not torch.allclose(states[0], states[1])


# --- loading errors and config files ----------------------------------------------------


def test_a_missing_model_folder_names_model_id_and_suggests_tiny(tmp_path):
    cfg = tiny_model_cfg("llava")
    cfg.id = str(tmp_path / "no_such_model")
    with pytest.raises(ModelLoadError) as err:
        load_vlm(cfg, tmp_path)
    message = str(err.value)
    assert f"model.id={cfg.id!r}" in message and "model=tiny" in message


def test_a_folder_without_a_model_names_model_id(tmp_path):
    cfg = tiny_model_cfg("llava")
    cfg.id = str(tmp_path)
    with pytest.raises(ModelLoadError, match=re.escape(f"model.id={str(tmp_path)!r}")):
        load_vlm(cfg, tmp_path)


def test_a_bad_model_config_lists_its_problems(tmp_path):
    cfg = OmegaConf.to_container(tiny_model_cfg("llava"))
    del cfg["device"]
    with pytest.raises(ValueError, match=r"model\.device is missing"):
        load_vlm(cfg, tmp_path)
    cfg = {**OmegaConf.to_container(tiny_model_cfg("llava")), "dtype": "float8", "tiny": None}
    with pytest.raises(ValueError) as err:
        load_vlm(cfg, tmp_path)
    assert "model.dtype='float8'" in str(err.value) and "model.tiny" in str(err.value)
    cfg = {**OmegaConf.to_container(tiny_model_cfg("llava")), "device": "gpu"}
    with pytest.raises(ValueError, match=r"model\.device='gpu' is not a device"):
        load_vlm(cfg, tmp_path)


def test_hub_identity_is_the_cached_snapshot_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--vlm"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert _hub_commit("org/vlm", None) == commit
    assert _hub_commit("org/other", None) is None


@pytest.mark.parametrize("path", sorted((CONF_DIR / "model").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_configs_share_their_keys(path):
    cfg = OmegaConf.load(path)
    keys = ["name", "id", "revision", "dtype", "device", "trust_remote_code"]
    optional = [k for k in ("lora_defaults",) if k in cfg]  # method defaults of this model
    assert list(cfg) in (
        [*keys, *optional],
        [*keys, *optional, "tiny"],
        [*keys, *optional, "organism"],
    ), "tiny: only for models built from config; organism: only for the model organism"
    assert path.read_text().startswith(f"# Launch: calib-run model={path.stem} ")
    if "organism" in cfg:
        assert cfg.id is None and cfg.dtype == "float32" and "tiny" in cfg.organism
    elif "tiny" not in cfg:
        assert cfg.id and cfg.dtype == "bfloat16" and cfg.trust_remote_code is False
        assert "GPU memory" in path.read_text()
    else:
        assert cfg.id is None
