"""data=organism and utility=organism: VSCBench's shapes, leak-free splits, exact answers."""

from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

from calib.errors import ConfigError
from eval.data.organism import load_organism, organism_samples
from eval.utility.base import score_responses
from eval.utility.organism import OrganismUtility


def test_samples_have_both_shapes_meta_and_rendered_pictures(tmp_path):
    samples = organism_samples(tmp_path, ["image", "txt"])
    assert Counter((s.condition, s.label) for s in samples) == {
        ("image", "safe"): 160, ("image", "unsafe"): 160, ("txt", "safe"): 162,
        ("txt", "unsafe"): 162,
    }  # fmt: skip
    for sample in samples:
        assert sample.meta["family"] and sample.meta["query"] == sample.prompt
        assert (sample.image is None) == (sample.condition == "txt")
    with Image.open(next(s.image for s in samples if s.image)) as image:
        assert image.size == (32, 32)


def test_vscbench_aggregation_covers_all_three_conditions(tmp_path):
    """The authors' aggregation (metrics' ``vscbench`` block) reads the image-centric half
    by image index and the text-centric half by condition, pictogram included."""
    from calib.types import Label
    from eval.metrics import vscbench_metrics

    samples = organism_samples(tmp_path, ["image", "txt", "pictogram"])
    assert {s.meta.get("image_index") for s in samples if s.condition == "image"} == {0}
    labels = [Label.REFUSE if s.label == "unsafe" else Label.COMPLY for s in samples]
    figures = vscbench_metrics(samples, labels)
    assert figures["image_centric"]["sra_u"] == figures["image_centric"]["sra_s"] == 1.0
    assert set(figures["text_centric"]["by_condition"]) == {"txt", "pictogram"}


def test_splits_share_no_group_nor_prompt(tmp_path):
    splits = load_organism(str(tmp_path), ["image", "txt"], 0.2, 0.25, seed=0, limit=None)
    parts = [splits.fit, splits.validation, splits.evaluation]
    groups = [{s.group for s in part} for part in parts]
    prompts = [{s.prompt for s in part} for part in parts]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not groups[i] & groups[j] and not prompts[i] & prompts[j]
    assert len(splits.evaluation) > len(splits.calibration)
    with pytest.raises(ConfigError, match=r"data\.conditions"):
        load_organism(str(tmp_path), ["typography"], 0.2, 0.25, seed=0, limit=None)


def test_utility_items_score_their_references(tmp_path):
    items = OrganismUtility(4, 0, str(tmp_path)).items()
    assert Counter(i.category for i in items) == {"colour": 4, "shape": 4, "position": 4}
    scores = score_responses(items, [f"It is {i.reference}." for i in items])
    assert all(s.score == 1.0 for s in scores)
    assert all(s.score == 0.0 for s in score_responses(items, ["Sure."] * len(items)))
