"""Every supported VLM family, end to end: ``model=<preset> model.id=<tiny folder>``.

For each family a tiny random model is built with the family's model class, processor class,
special tokens and real hub chat template (:mod:`tests.families`), and ``calib-run``'s journey
runs ``none``, ``steering`` and ``lora`` on it; a token-level check asserts that LoRA's
training prompt is the generation prompt and that answers end with a stop token. Families
whose processors need torchvision are marked ``vision`` and run in the vision lane
(``.venv-vision``, ``pytest -m vision``); they skip with the reason elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from calib.cli.common import compose_config
from calib.model import load_vlm
from calib.pipeline import evaluate
from tests.conftest import TINY_RUN
from tests.families import FAMILIES, NEEDS_TORCHVISION
from train.lora_collator import ParityCollator, stop_ids
from train.lora_data import TrainingExample, to_dataset

FAST = [
    "utility=none",
    "data.limit=16",
    "generation.max_new_tokens=4",
    "generation.batch_size=4",
    "metrics.n_boot=0",
    "model.dtype=float32",
    "model.device=cpu",
]
METHOD_FAST = {
    "none": [],
    "steering": ["method.layer=1", "method.holdout=0"],
    "lora": [
        "method.max_steps=1",
        "method.train_batch_size=4",
        "method.r=4",
        "method.alpha=8",
        "method.progress=false",
    ],
}


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def family_params() -> list:
    params = []
    for name in FAMILIES:
        marks = []
        if name in NEEDS_TORCHVISION:
            marks = [
                pytest.mark.vision,
                pytest.mark.skipif(
                    not _has_torchvision(),
                    reason="needs torchvision: the vision lane (EXTRAS=dev,vision "
                    "bash scripts/install.sh; .venv-vision/bin/pytest -m vision)",
                ),
            ]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory) -> dict[str, Path]:
    """Built lazily: each family's folder on first use (module scope)."""
    return {"root": tmp_path_factory.mktemp("families")}


def folder_of(name: str, folders: dict[str, Path]) -> Path:
    if name not in folders:
        folders[name] = FAMILIES[name].build(folders["root"] / name)
    return folders[name]


def family_cfg(name: str, folder: Path, cache: Path, *overrides: str):
    return compose_config(
        [
            *TINY_RUN,  # the sample data and utility; the family's preset replaces the model
            f"model={FAMILIES[name].preset}",
            f"model.id={folder}",
            f"paths.cache_dir={cache}",
            *FAST,
            *overrides,
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", family_params())
def test_every_method_runs_end_to_end(name, family_folders, tmp_path):
    """none, steering and lora in turn, sharing one cache (the baseline answers are reused)."""
    folder = folder_of(name, family_folders)
    for method, overrides in METHOD_FAST.items():
        run_dir = tmp_path / method
        cfg = family_cfg(name, folder, tmp_path / "cache", f"method={method}", *overrides)
        metrics = evaluate(cfg, run_dir)
        written = json.loads((run_dir / "metrics.json").read_text())
        assert written["run"]["n_evaluation"] == metrics["run"]["n_evaluation"] > 0, method
        assert written["run"]["model_identity"].startswith("local:")
        rows = (run_dir / "responses.jsonl").read_text().splitlines()
        assert len(rows) == metrics["run"]["n_evaluation"], method
        if method == "lora":
            assert (run_dir / "method" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("name", family_params())
def test_lora_training_prompt_is_the_generation_prompt(name, family_folders, tmp_path, tiny_images):
    folder = folder_of(name, family_folders)
    vlm = load_vlm(family_cfg(name, folder, tmp_path).model, tmp_path)
    example = TrainingExample(
        "a",
        "refusal",
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": str(tiny_images[0])},
                    {"type": "text", "text": "How do I do this?"},
                ],
            }
        ],
        "I can't help with that.",
    )
    text_only = TrainingExample(
        "b", "self", [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "Hello."
    )
    for item in (example, text_only):
        batch = ParityCollator(vlm)(list(to_dataset([item])))
        prompt = vlm.encode([item.conversation])["input_ids"][0].tolist()
        sequence = batch["input_ids"][0].tolist()
        assert sequence[: len(prompt)] == prompt
        assert sequence[-1] in stop_ids(vlm)
        assert vlm.tokenizer.bos_token_id not in sequence[len(prompt) :]  # no stray BOS
        assert batch["labels"][0, : len(prompt)].eq(-100).all()


def test_mllama_text_only_hidden_states_read_the_layers_that_ran(family_folders, tmp_path):
    """Mllama skips its cross-attention layer (1) without an image: the residual stream after
    it is the output of layer 0, the last layer that ran."""
    vlm = load_vlm(
        family_cfg("mllama", folder_of("mllama", family_folders), tmp_path).model, tmp_path
    )
    assert vlm.model.config.text_config.cross_attention_layers == [1]
    text_only = [[{"role": "user", "content": [{"type": "text", "text": "How do I bake bread?"}]}]]
    states = vlm.hidden_states(text_only, [0, 1, 2])
    assert torch.equal(states[:, 0], states[:, 1])  # layer 1 did not run
    assert not torch.equal(states[:, 1], states[:, 2])


def test_paligemma_gets_a_default_template_and_text_only_batches(
    family_folders, tmp_path, tiny_images, caplog
):
    folder = folder_of("paligemma", family_folders)
    with caplog.at_level("WARNING", logger="calib.model.load"):
        vlm = load_vlm(family_cfg("paligemma", folder, tmp_path).model, tmp_path)
    assert "has no chat template" in caplog.text
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(tiny_images[0])},
                {"type": "text", "text": "Hi"},
            ],
        }
    ]
    for conversation in (text_only, with_image):
        batch = vlm.encode([conversation])
        assert "labels" not in batch  # the processor's training labels never reach the model
    text_ids = vlm.encode([text_only])["input_ids"][0].tolist()
    assert text_ids[0] == vlm.tokenizer.bos_token_id
    assert vlm.tokenizer.decode(text_ids, skip_special_tokens=True) == "Hi\n"
    assert len(vlm.generate([text_only, with_image], max_new_tokens=2)) == 2


def test_paligemma_rows_are_laid_out_alike_in_any_batch(family_folders, tmp_path, tiny_images):
    """An image row as PaliGemma's own processor lays it out; a text-only row the same alone
    or beside an image row (the processor would put its BOS inside the text)."""
    from PIL import Image

    vlm = load_vlm(
        family_cfg("paligemma", folder_of("paligemma", family_folders), tmp_path).model, tmp_path
    )
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(tiny_images[0])},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    image = Image.open(tiny_images[0]).convert("RGB")
    own = vlm.processor(text=vlm.render([with_image]), images=[[image]], return_tensors="pt")
    ours = vlm.encode([with_image])
    assert ours["input_ids"].tolist() == own["input_ids"].tolist()
    assert torch.equal(ours["pixel_values"], own["pixel_values"])

    def unpadded(batch, row):
        return batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()

    mixed = vlm.encode([with_image, text_only])
    assert unpadded(mixed, 1) == unpadded(vlm.encode([text_only]), 0)
    assert unpadded(mixed, 0) == unpadded(ours, 0)
