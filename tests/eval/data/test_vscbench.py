"""The VSCBench loader: the real spreadsheets (counts, twins, leak-free splits) and synthetic
archives built in tmp_path (openable images, missing and corrupt files, config errors)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from calib.cli.common import compose_config, config_dir
from calib.errors import ConfigError, DataError
from calib.pipeline import load_data
from eval.data.render import FIGSTEP_INSTRUCTION
from eval.data.splits import normalise_text
from eval.data.vscbench import (
    CONDITIONS,
    HALVES,
    IMAGE_CENTRIC_DIR,
    TEXT_CENTRIC_DIR,
    load_frames,
    load_vscbench,
    vscbench_samples,
)
from eval.data.vscbench_twins import family, longest_shared_run, text_twin_keys

CONF = config_dir()


@pytest.fixture(scope="module")
def frames(vscbench_sheets):
    return load_frames(str(vscbench_sheets), None, None, HALVES)


@pytest.fixture(scope="module")
def all_samples(frames, tmp_path_factory):
    return vscbench_samples(tmp_path_factory.mktemp("nowhere"), *frames)


@pytest.fixture(scope="module")
def full_split(synthetic_root):
    return load_vscbench(
        str(synthetic_root), None, None, HALVES, CONDITIONS, None, "error", 0.2, 0.25, 0, None
    )


def load(root, **overrides):
    settings = {
        "image_centric_xlsx": None,
        "text_centric_xlsx": None,
        "halves": list(HALVES),
        "conditions": list(CONDITIONS),
        "categories": None,
        "on_missing": "error",
        "calibration_fraction": 0.2,
        "validation_fraction": 0.25,
        "seed": 0,
        "limit": None,
    }
    settings.update(overrides)
    return load_vscbench(None if root is None else str(root), **settings)


def test_spreadsheets_have_300_and_450_rows(frames):
    image_frame, text_frame = frames
    assert len(image_frame) == 300 and len(text_frame) == 450


def test_image_centric_has_1800_samples_900_per_label_and_three_indices(all_samples):
    image = [s for s in all_samples if s.meta["half"] == "image_centric"]
    assert len(image) == 1800
    assert Counter(s.label for s in image) == {"safe": 900, "unsafe": 900}
    assert Counter(s.meta["image_index"] for s in image) == {0: 600, 1: 600, 2: 600}
    assert len({s.category for s in image}) == 6
    assert all(s.condition == "image" for s in image)
    assert all(Path(s.image).parent.name == s.category for s in image)


def test_text_centric_has_250_safe_200_unsafe_queries_in_five_conditions(all_samples):
    text = [s for s in all_samples if s.meta["half"] == "text_centric"]
    assert len(text) == 2250
    queries = {s.meta["row"]: s.label for s in text}
    assert Counter(queries.values()) == {"safe": 250, "unsafe": 200}
    assert Counter(s.condition for s in text) == dict.fromkeys(
        ["txt", "search", "typography", "concat", "figstep"], 450
    )
    for s in text:
        if s.condition == "txt":
            assert s.image is None
        else:
            assert Path(s.image).parent.name == s.condition
            assert Path(s.image).parent.parent.name == TEXT_CENTRIC_DIR
        assert (s.prompt == FIGSTEP_INSTRUCTION) == (s.condition == "figstep")


def test_twins_share_a_group(frames, all_samples):
    _, text_frame = frames
    group_of_row = {s.meta["row"]: s.group for s in all_samples if s.meta["half"] == "text_centric"}
    keys = text_twin_keys(text_frame)
    rows_of_key = defaultdict(set)
    for row, row_keys in enumerate(keys):
        for key in row_keys:
            rows_of_key[key].add(row)
    unsafe = ["contrast" in t for t in text_frame["type"]]
    for rows in rows_of_key.values():
        assert len({group_of_row[r] for r in rows}) == 1
    # every unsafe row has at least one safe twin of its family
    for row in (r for r in range(len(keys)) if unsafe[r]):
        twins = {r for key in keys[row] for r in rows_of_key[key]} - {row}
        assert any(not unsafe[r] for r in twins), f"contrast row {row} has no safe twin"
        assert {family(text_frame["type"][r]) for r in twins} == {family(text_frame["type"][row])}
    # safe rows without focus and without a fixed order pair by wording, where it is clear
    lookalike = [r for r, row_keys in enumerate(keys) if any(":lookalike:" in k for k in row_keys)]
    assert len(lookalike) >= 30


def test_longest_shared_run_counts_consecutive_words():
    assert (
        longest_shared_run("Why can a dog not fly to the moon?", "Can a cat fly to the moon") == 4
    )
    assert longest_shared_run("abc", "xyz") == 0


def test_equal_prompts_share_a_group(all_samples):
    groups_of_prompt = defaultdict(set)
    for s in all_samples:
        if s.condition == "image" and s.prompt:
            groups_of_prompt[normalise_text(s.prompt)].add(s.group)
    assert len(groups_of_prompt) < 300
    assert all(len(groups) == 1 for groups in groups_of_prompt.values())


def test_full_split_is_leak_free_and_stratified(full_split):
    calibration, evaluation = full_split.calibration, full_split.evaluation
    assert len(calibration) + len(evaluation) == 4050
    assert not {s.group for s in calibration} & {s.group for s in evaluation}

    def prompts(samples):
        return {normalise_text(s.prompt) for s in samples if s.prompt != FIGSTEP_INSTRUCTION} - {""}

    assert not prompts(calibration) & prompts(evaluation)
    assert not {s.meta["row"] for s in calibration if s.meta["half"] == "text_centric"} & {
        s.meta["row"] for s in evaluation if s.meta["half"] == "text_centric"
    }
    assert abs(len(calibration) / 4050 - 0.2) < 0.01
    totals = Counter((s.category, s.label) for s in full_split.samples)
    taken = Counter((s.category, s.label) for s in calibration)
    assert set(taken) == set(totals), "every category and label is in the calibration split"
    for stratum, n in totals.items():
        assert abs(taken[stratum] / n - 0.2) <= 0.1, stratum
    info = full_split.info
    assert info["fit"]["size"] + info["validation"]["size"] == len(calibration)
    assert info["evaluation"]["by_label"] == dict(Counter(s.label for s in evaluation))
    assert info["dropped"]["samples"] == 0 and info["empty_prompts"] == 12


def test_loaded_images_open(synthetic_root):
    splits = load(synthetic_root, limit=24, seed=3)
    assert len(splits.samples) == 24 and splits.calibration
    for s in splits.samples:
        if s.image is not None:
            assert Path(s.image).is_absolute()
            with Image.open(s.image) as image:
                image.load()
    assert splits.samples == load(synthetic_root, limit=24, seed=3).samples


def test_selection_by_half_condition_and_category(synthetic_root, vscbench_sheets):
    drugs = load(synthetic_root, halves=["image_centric"], categories=["drugs"])
    assert len(drugs.samples) == 300
    text_only = load(
        None,
        halves=["text_centric"],
        conditions=["txt"],
        text_centric_xlsx=str(vscbench_sheets / "vscbench_text_centric.xlsx"),
    )
    assert len(text_only.samples) == 450 and all(s.image is None for s in text_only.samples)
    with pytest.raises(ConfigError, match=r"data\.categories: unknown"):
        load(synthetic_root, categories=["no_such_category"])


def test_missing_and_corrupt_images_error_or_are_skipped(broken_root, broken_files):
    with pytest.raises(DataError) as error:
        load(broken_root)
    message = str(error.value)
    assert "1 VSCBench image(s) missing and 1 unreadable" in message
    assert broken_files["removed"] in message and broken_files["truncated"] in message
    assert "calib-data check" in message and "data.on_missing=skip" in message

    splits = load(broken_root, on_missing="skip")
    dropped = splits.info["dropped"]
    assert dropped == {
        "samples": 2,
        "missing_images": 1,
        "unreadable_images": 1,
        "examples": dropped["examples"],
    }
    assert len(splits.samples) == 4048
    assert not {str(broken_root / p) for p in broken_files.values()} & {
        s.image for s in splits.samples
    }


def test_missing_folders_name_the_key_the_folder_and_the_fallback(tmp_path, vscbench_sheets):
    for name in ("vscbench_image_centric.xlsx", "vscbench_text_centric.xlsx"):
        (tmp_path / name).write_bytes((vscbench_sheets / name).read_bytes())
    with pytest.raises(ConfigError) as error:
        load(tmp_path)
    message = str(error.value)
    assert f"data.root={tmp_path} has no {IMAGE_CENTRIC_DIR}/ folder" in message
    assert f"has no {TEXT_CENTRIC_DIR}/ folder" in message and "data=sample" in message
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        load(None)


def test_conf_data_vscbench_yields_data_splits(synthetic_root):
    cfg = compose_config(
        overrides=["data=vscbench", f"data.root={synthetic_root}", "data.limit=24"],
    )
    splits = load_data(cfg)  # call(cfg.data) without the keys the run reads itself
    assert len(splits.samples) == 24
    assert splits.info["source"] == "vscbench" and splits.info["seed"] == cfg.seed
    assert json.loads(json.dumps(splits.info)) == splits.info, "info must be JSON-able"
