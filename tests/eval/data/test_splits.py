"""Grouping, stratified limits and grouped, stratified splits (on hand-built samples)."""

from __future__ import annotations

from collections import Counter

import pytest

from calib.errors import ConfigError
from calib.types import Sample
from eval.data.base import DataSplits, make_splits
from eval.data.splits import (
    grouped_split,
    link_groups,
    normalise_text,
    stratified_limit,
    summarise,
)


def sample(
    i: int, group: str, category: str = "c0", label: str = "safe", prompt: str = ""
) -> Sample:
    return Sample(
        id=f"s{i}",
        prompt=prompt or f"prompt {i}",
        image=None,
        label=label,
        category=category,
        condition="txt",
        group=group,
    )


def corpus(n_groups: int = 40) -> list[Sample]:
    """Groups of one safe and one unsafe sample (twins), over four categories."""
    return [
        sample(2 * g + k, f"g{g:02d}", f"c{g % 4}", label)
        for g in range(n_groups)
        for k, label in enumerate(("safe", "unsafe"))
    ]


def test_normalise_text_ignores_case_spacing_and_punctuation_forms():
    assert normalise_text("  What’s THIS？ ") == normalise_text("what s this?")
    assert normalise_text("...") == ""


def test_link_groups_merges_through_shared_keys_transitively():
    samples = [sample(0, "b"), sample(1, "a"), sample(2, "c"), sample(3, "d")]
    keys = {"a": ["k1"], "b": ["k1", "k2"], "c": ["k2"], "d": ["k3"]}
    linked = link_groups(samples, lambda s: keys[s.group])
    assert [s.group for s in linked] == ["a", "a", "a", "d"]


def test_stratified_limit_is_exact_proportional_and_seeded():
    samples = [sample(i, f"g{i}", "big" if i < 60 else "small") for i in range(80)]
    kept = stratified_limit(samples, 20, seed=1)
    assert len(kept) == 20
    assert Counter(s.category for s in kept) == {"big": 15, "small": 5}
    assert kept == stratified_limit(samples, 20, seed=1)
    assert [s.id for s in kept] == sorted((s.id for s in kept), key=lambda i: int(i[1:]))
    assert stratified_limit(samples, None, seed=1) == samples


def test_grouped_split_keeps_groups_whole_and_strata_near_the_fraction():
    samples = corpus()
    calibration, evaluation = grouped_split(samples, 0.25, seed=3)
    assert not {s.group for s in calibration} & {s.group for s in evaluation}
    assert len(calibration) + len(evaluation) == len(samples)
    assert len(calibration) == 20
    per_stratum = Counter((s.category, s.label) for s in calibration)
    assert sorted(per_stratum.values()) == [2, 2, 2, 2, 3, 3, 3, 3], "targets are 2.5 each"
    assert grouped_split(samples, 0.25, seed=3) == (calibration, evaluation)
    assert grouped_split(samples, 0.25, seed=4) != (calibration, evaluation)


def test_grouped_split_fills_a_small_calibration_split():
    samples = [sample(i, f"g{i}", f"c{i}") for i in range(10)]  # every stratum has one sample
    calibration, _ = grouped_split(samples, 0.2, seed=0)
    assert len(calibration) == 2


def test_grouped_split_with_fraction_zero_keeps_everything_for_evaluation():
    samples = corpus(4)
    assert grouped_split(samples, 0.0, seed=0) == ([], samples)


def test_make_splits_reports_sizes_and_rejects_bad_settings():
    splits = make_splits(
        corpus(),
        calibration_fraction=0.4,
        validation_fraction=0.5,
        seed=0,
        limit=30,
        info={"source": "test"},
    )
    assert isinstance(splits, DataSplits)
    assert len(splits.samples) == 30
    info = splits.info
    assert info["source"] == "test" and info["limit"] == 30
    assert sum(info[part]["size"] for part in ("fit", "validation", "evaluation")) == 30
    assert info["evaluation"] == summarise(splits.evaluation)
    assert info["validation"] == summarise(splits.validation) and splits.validation
    with pytest.raises(ConfigError) as error:
        make_splits(
            corpus(), calibration_fraction=1.0, validation_fraction="half", seed=0, limit=1, info={}
        )
    assert len(error.value.problems) == 3
    assert "data.calibration_fraction=1.0" in str(error.value)
    assert "data.validation_fraction='half'" in str(error.value)
    assert "data.limit=1" in str(error.value)
