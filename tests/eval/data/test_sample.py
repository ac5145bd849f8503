"""The embedded sample benchmark: size, shapes, rendered pictures, splits, config wiring."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from calib.cli.common import compose_config, config_dir
from calib.errors import ConfigError
from calib.pipeline import load_data
from eval.data.base import DataSplits
from eval.data.render import FIGSTEP_INSTRUCTION, IMAGE_REFERENCE
from eval.data.sample import load_sample, sample_items, sample_samples
from eval.data.splits import normalise_text
from eval.data.vscbench import read_image_centric, read_text_centric

CONF = config_dir()
ALL_CONDITIONS = ["image", "txt", "typography", "figstep"]


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sample_cache")


@pytest.fixture(scope="module")
def samples(sample_cache):
    return sample_samples(sample_cache, ALL_CONDITIONS, image_size=64)


def test_size_categories_labels_and_conditions(samples):
    assert len(samples) == 72
    assert len({s.id for s in samples}) == len(samples)
    by_category = Counter((s.category, s.label) for s in samples)
    categories = {c for c, _ in by_category}
    assert len(categories) >= 6
    for category in categories:
        assert by_category[(category, "safe")] == by_category[(category, "unsafe")] > 0
    assert Counter(s.condition for s in samples) == {
        "image": 24,
        "txt": 16,
        "typography": 16,
        "figstep": 16,
    }


def test_image_centric_items_share_the_query_across_a_safe_and_an_unsafe_picture(samples):
    by_group = {}
    for s in samples:
        if s.condition == "image":
            by_group.setdefault(s.group, []).append(s)
    assert len(by_group) == 12
    for pair in by_group.values():
        assert sorted(s.label for s in pair) == ["safe", "unsafe"]
        assert pair[0].prompt == pair[1].prompt and pair[0].image != pair[1].image
        assert all(s.meta["half"] == "image_centric" and s.meta["image_index"] == 0 for s in pair)


def test_text_centric_conditions_have_the_right_prompt_and_image(samples):
    for s in samples:
        if s.condition == "txt":
            assert s.image is None and s.meta["object"] in s.prompt
        elif s.condition == "typography":
            assert IMAGE_REFERENCE in s.prompt and s.meta["object"] not in s.prompt
        elif s.condition == "figstep":
            assert s.prompt == FIGSTEP_INSTRUCTION
        if s.condition != "image":
            assert s.meta["half"] == "text_centric"
            assert ("contrast" in s.meta["type"]) == (s.label == "unsafe")


def test_pictures_are_written_once_open_and_are_reused(samples, sample_cache):
    paths = [Path(s.image) for s in samples if s.image]
    assert all(p.is_absolute() and p.is_relative_to(sample_cache) for p in paths)
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (64, 64)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}
    again = sample_samples(sample_cache, ALL_CONDITIONS, image_size=64)
    assert again == samples
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths} == before


def test_three_way_split_is_grouped_seeded_and_every_part_has_samples(sample_cache):
    splits = load_sample(str(sample_cache), ALL_CONDITIONS, 64, 0.4, 0.5, seed=5, limit=None)
    assert isinstance(splits, DataSplits)
    parts = {"fit": splits.fit, "validation": splits.validation, "evaluation": splits.evaluation}
    groups = {name: {s.group for s in part} for name, part in parts.items()}
    prompts = {
        name: {s.prompt for s in part if s.condition == "txt"} for name, part in parts.items()
    }
    for a, b in [("fit", "validation"), ("fit", "evaluation"), ("validation", "evaluation")]:
        assert parts[a] and not groups[a] & groups[b], f"{a} and {b} share a query group"
        assert not prompts[a] & prompts[b], f"{a} and {b} share a prompt"
    assert 0.3 * 72 <= len(splits.calibration) <= 0.5 * 72
    assert 0.3 <= len(splits.validation) / len(splits.calibration) <= 0.7
    assert splits.info["source"] == "sample" and splits.info["total"] == 72
    assert splits.info["validation"]["size"] == len(splits.validation)
    again = load_sample(str(sample_cache), ALL_CONDITIONS, 64, 0.4, 0.5, seed=5, limit=None)
    assert (again.fit, again.validation) == (splits.fit, splits.validation)
    limited = load_sample(str(sample_cache), ALL_CONDITIONS, 64, 0.2, 0.25, seed=5, limit=24)
    assert len(limited.samples) == 24 and limited.calibration
    none_held = load_sample(str(sample_cache), ALL_CONDITIONS, 64, 0.2, 0.0, seed=5, limit=None)
    assert none_held.validation == [] and none_held.fit


def test_bad_settings_are_reported_together(sample_cache):
    with pytest.raises(ConfigError) as error:
        load_sample(str(sample_cache), ["image", "search"], 8, 0.2, 0.25, seed=0, limit=None)
    assert "data.conditions" in str(error.value) and "data.image_size=8" in str(error.value)


def test_conf_data_sample_yields_data_splits(tmp_path):
    cfg = compose_config(
        overrides=["data=sample", f"paths.cache_dir={tmp_path}", "data.conditions=[txt]"],
    )
    splits = load_data(cfg)  # call(cfg.data) without the keys the run reads itself
    assert len(splits.samples) == 16 and splits.info["seed"] == cfg.seed
    assert json.loads(json.dumps(splits.info)) == splits.info, "info must be JSON-able"


def test_the_sample_set_is_original(vscbench_sheets):
    """None of its queries is one of VSCBench's (or XSTest's, which VSCBench contains)."""
    theirs = set()
    image_sheet = read_image_centric(vscbench_sheets / "vscbench_image_centric.xlsx")
    text_sheet = read_text_centric(vscbench_sheets / "vscbench_text_centric.xlsx")
    theirs.update(normalise_text(p) for p in image_sheet["Prompt"])
    for column in ("prompt_origin", "prompt_mm", "prompt_figstep"):
        theirs.update(normalise_text(p) for p in text_sheet[column])
    items = sample_items()
    ours = [item["query"] for item in items["image_centric"]]
    ours += [
        pair[label][field]
        for pair in items["text_centric"]
        for label in ("safe", "unsafe")
        for field in ("query", "statement")
    ]
    assert not {normalise_text(q) for q in ours} & theirs
