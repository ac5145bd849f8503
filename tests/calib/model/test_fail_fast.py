"""Fail-fast loading: a checkpoint that cannot serve a run is refused in seconds, in one
paragraph naming the fix, before its weights load and before any data is prepared."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from calib.errors import ModelLoadError
from calib.model import load_vlm
from calib.model.tiny import build_tiny
from tests.conftest import TINY_RUN, tiny_model_cfg


def _copy_tiny(arch: str, cache: Path, dest: Path) -> Path:
    """A writable copy of a tiny model's folder (to break on purpose)."""
    return Path(shutil.copytree(build_tiny(tiny_model_cfg(arch).tiny, cache), dest))


def _cfg_for(folder: Path):
    cfg = tiny_model_cfg("llava")
    cfg.id = str(folder)
    return cfg


def _without_weights(folder: Path) -> None:
    """Removing the weights proves a check ran before they were needed."""
    for path in folder.glob("*.safetensors"):
        path.unlink()


def test_a_text_only_language_model_is_refused_in_one_short_paragraph(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "lm"
    )
    with pytest.raises(ModelLoadError) as err:
        load_vlm(_cfg_for(tmp_path / "lm"), tmp_path)
    message = str(err.value)
    assert "'llama' model" in message and "vision-language" in message
    assert "\n" not in message and len(message) < 600  # not transformers' list of 400 types


def test_a_missing_chat_template_is_refused_before_the_weights_load(tmp_path, tiny_cache_dir):
    folder = _copy_tiny("llava", tiny_cache_dir, tmp_path / "llava")
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    processor_config = folder / "processor_config.json"
    if processor_config.is_file():
        data = json.loads(processor_config.read_text())
        data.pop("chat_template", None)
        processor_config.write_text(json.dumps(data))
    _without_weights(folder)
    started = time.time()
    with pytest.raises(ModelLoadError, match="has no chat template") as err:
        load_vlm(_cfg_for(folder), tmp_path)
    assert "processor.chat_template" in str(err.value)
    assert time.time() - started < 30


def test_missing_weights_are_named_after_the_checks_pass(tmp_path, tiny_cache_dir):
    folder = _copy_tiny("llava", tiny_cache_dir, tmp_path / "llava")
    _without_weights(folder)
    with pytest.raises(ModelLoadError, match="the weights could not be loaded"):
        load_vlm(_cfg_for(folder), tmp_path)


def test_a_processor_that_needs_torchvision_says_what_to_install(tmp_path):
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed here: the error cannot happen")
    except ImportError:
        pass
    from transformers import Qwen2VLConfig

    folder = tmp_path / "qwen2vl"
    Qwen2VLConfig().save_pretrained(folder)  # no weights: the processor fails first
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {"processor_class": "Qwen2VLProcessor", "image_processor_type": "Qwen2VLImageProcessor"}
        )
    )
    with pytest.raises(ModelLoadError) as err:
        load_vlm(_cfg_for(folder), tmp_path)
    message = str(err.value)
    assert "Torchvision" in message and "EXTRAS=dev,vision bash scripts/install.sh" in message


def test_a_processor_that_cannot_encode_is_refused_right_after_loading(tmp_path, tiny_cache_dir):
    folder = _copy_tiny("llava", tiny_cache_dir, tmp_path / "llava")
    # A template that raises for every conversation: the probe batch must catch it.
    template = "{{ raise_exception('this template renders nothing') }}"
    (folder / "chat_template.jinja").write_text(template)
    with pytest.raises(ModelLoadError, match="image\\+text batch cannot be encoded") as err:
        load_vlm(_cfg_for(folder), tmp_path)
    assert "this template renders nothing" in str(err.value)


def test_a_run_reports_a_broken_model_before_preparing_any_data(tmp_path):
    """The model is loaded before the data: with both broken, the model's error shows."""
    from calib.cli.common import compose_config
    from calib.pipeline import evaluate

    cfg = compose_config(
        [
            *TINY_RUN,
            f"model.id={tmp_path / 'no_such_model'}",
            "model.tiny=null",
            "data=vscbench",
            f"data.root={tmp_path / 'no_such_data'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "logger=none",
        ]
    )
    with pytest.raises(ModelLoadError, match="no_such_model"):
        evaluate(cfg, tmp_path / "run")
