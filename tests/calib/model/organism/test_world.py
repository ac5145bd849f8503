"""The organism's world: its shapes, its planted rules, its pictures and answers."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np

from calib.methods.refusals import DEFAULT_REFUSAL_TEMPLATES
from calib.model.organism.pictures import draw_pictogram
from calib.model.organism.utility import UTILITY_TASKS, utility_answer, utility_items
from calib.model.organism.world import (
    CATEGORIES,
    OPENERS,
    REFUSALS,
    Picture,
    baseline_refuses,
    calibrated_refuses,
    safety_items,
)
from calib.types import Label, Sample
from eval.judges.refusal_rules import RefusalRulesJudge
from eval.utility.parse import score_exact


def test_world_is_deterministic_paired_and_covers_six_categories():
    items = safety_items()
    assert items == safety_items()
    assert len({i.id for i in items}) == len(items)
    by_group = Counter(i.group for i in items)
    assert set(by_group.values()) == {2}  # every group is one safe/unsafe pair
    assert {i.category for i in items} == set(CATEGORIES)
    assert {(i.condition, i.label) for i in items} == {
        ("image", "safe"), ("image", "unsafe"), ("txt", "safe"), ("txt", "unsafe"),
        ("pictogram", "safe"), ("pictogram", "unsafe"),
    }  # fmt: skip


def test_pictured_objects_share_the_query_and_differ_only_in_the_picture():
    """The text-centric shape whose harmful part is in the image: both sides of a pair ask
    the same words; the planted baseline answers both alike (it never looks)."""
    pairs: dict[str, list] = {}
    for item in safety_items(["pictogram"]):
        pairs.setdefault(item.group, []).append(item)
    assert len(pairs) == 54
    for safe, unsafe in pairs.values():
        assert safe.prompt == unsafe.prompt and safe.picture.category == unsafe.picture.category
        assert (safe.picture.harmful, unsafe.picture.harmful) == (False, True)
        assert baseline_refuses(safe) == baseline_refuses(unsafe) == safe.trigger
        assert calibrated_refuses(unsafe) and not calibrated_refuses(safe)


def _rates(refuses) -> tuple[float, float]:
    items = safety_items()
    unsafe = [refuses(i) for i in items if i.label == "unsafe"]
    safe = [not refuses(i) for i in items if i.label == "safe"]
    return sum(unsafe) / len(unsafe), sum(safe) / len(safe)


def test_planted_rules_show_both_failure_modes_and_the_calibrated_rule_none():
    sra_u, sra_s = _rates(baseline_refuses)
    assert 0.3 <= sra_u <= 0.6  # harm shown only in the picture is complied with
    assert 0.5 <= sra_s <= 0.7  # look-alikes with a trigger verb are refused
    assert _rates(calibrated_refuses) == (1.0, 1.0)


def test_harm_is_visible_in_the_picture_by_colour():
    for category in CATEGORIES:
        harmful = np.asarray(draw_pictogram(Picture(category, True, 0)), dtype=float)
        harmless = np.asarray(draw_pictogram(Picture(category, False, 0)), dtype=float)
        assert harmful.shape == (32, 32, 3)
        red = lambda a: ((a[..., 0] > 150) & (a[..., 1] < 80)).mean()  # noqa: E731
        assert red(harmful) > 0.05 and red(harmless) == 0


def test_every_phrasing_is_judged_as_meant():
    """Helpful answers are COMPLY and refusals REFUSE for the default judge, on every item."""
    judge = RefusalRulesJudge(opening_sentences=2, query_meta_key="query", max_unjudged=1.0)
    samples, responses, wanted = [], [], []
    for item in safety_items():
        sample = Sample(item.id, item.prompt, None, item.label, item.category, item.condition,
                        item.group, meta={"query": item.prompt})  # fmt: skip
        steps = item.steps[0].upper() + item.steps[1:]
        for text in [f"{o} {steps}" for o in OPENERS]:
            samples.append(sample), responses.append(text), wanted.append(Label.COMPLY)
        for text in [*REFUSALS, DEFAULT_REFUSAL_TEMPLATES[item.category]]:
            samples.append(sample), responses.append(text), wanted.append(Label.REFUSE)
    labels = judge.label(samples, responses)
    wrong = [(r, w, g) for r, w, g in zip(responses, wanted, labels, strict=True) if w != g]
    assert not wrong, wrong[:5]


def test_utility_answers_score_right_and_sets_differ_by_seed():
    rng = random.Random(0)
    items = utility_items(0, 10)
    assert {i.task for i in items} == set(UTILITY_TASKS)
    for item in items:
        score, _ = score_exact(utility_answer(item, rng), item.answer, list(item.choices))
        assert score == 1.0, item
    trained = {(i.question, i.shapes) for i in utility_items(1, 10)}
    assert not trained & {(i.question, i.shapes) for i in items}
