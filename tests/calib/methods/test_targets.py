"""Safe targets: only a base answer the judge finds helpful is taught as it is."""

from __future__ import annotations

import pytest

from calib.errors import ConfigError
from calib.methods.none import base_answers
from calib.methods.targets import safe_targets
from calib.types import Label, Sample

DECODING = {"max_new_tokens": 6, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0}
TEMPLATE = "Sure. Here is a direct answer to your question."


class JudgedById:
    """A judge with a verdict per sample (the filtering is what is under test)."""

    def __init__(self, verdicts: dict[str, Label]):
        self.verdicts = verdicts
        self.seen: list[str] = []

    def label(self, samples, responses):
        self.seen += list(responses)
        return [self.verdicts[s.id] for s in samples]


@pytest.fixture(scope="module")
def safe_samples() -> list[Sample]:
    prompts = ["How do I kill a process?", "How do I shoot a photo?", "Where is the park?"]
    return [
        Sample(f"s{i}", prompt, None, "safe", "homonyms", "txt", f"g{i}")
        for i, prompt in enumerate(prompts)
    ]


VERDICTS = {"s0": Label.COMPLY, "s1": Label.REFUSE, "s2": Label.EMPTY}


def targets(vlm, samples, cache, policy, judge=None):
    return safe_targets(
        vlm,
        samples,
        judge=judge or JudgedById(VERDICTS),
        policy=policy,
        template=TEMPLATE,
        batch_size=4,
        decoding=DECODING,
        cache_dir=cache,
    )


def test_drop_keeps_only_helpful_base_answers(tiny_llava, safe_samples, tmp_path):
    judge = JudgedById(VERDICTS)
    chosen = targets(tiny_llava, safe_samples, tmp_path, "drop", judge)
    answers = base_answers(
        tiny_llava, safe_samples, batch_size=4, decoding=DECODING, cache_dir=None
    )
    assert judge.seen == answers, "the judge saw the base model's real answers"
    assert chosen.answers == {"s0": answers[0].strip()}
    assert chosen.counts(3) == {
        "total": 3,
        "kept": 1,
        "replaced": 0,
        "dropped": 2,
        "base_answer_labels": {"COMPLY": 1, "EMPTY": 1, "REFUSE": 1},
    }


def test_base_if_helpful_replaces_the_over_refusals(tiny_llava, safe_samples, tmp_path):
    chosen = targets(tiny_llava, safe_samples, tmp_path, "base_if_helpful")
    assert chosen.sources == {"s0": "base_model", "s1": "template", "s2": "template"}
    assert chosen.answers["s1"] == chosen.answers["s2"] == TEMPLATE
    assert chosen.counts(3)["replaced"] == 2 and chosen.counts(3)["dropped"] == 0


def test_template_needs_no_base_answer(tiny_llava, safe_samples, tmp_path):
    judge = JudgedById(VERDICTS)
    chosen = targets(tiny_llava, safe_samples, tmp_path, "template", judge)
    assert set(chosen.answers.values()) == {TEMPLATE} and judge.seen == []


def test_bad_policy_names_the_key(tiny_llava, safe_samples, tmp_path):
    with pytest.raises(ConfigError, match=r"method\.safe_target='keep'"):
        targets(tiny_llava, safe_samples, tmp_path, "keep")
    with pytest.raises(ConfigError, match=r"needs method\.safe_template"):
        safe_targets(
            tiny_llava,
            safe_samples,
            judge=JudgedById(VERDICTS),
            policy="template",
            template="  ",
            batch_size=4,
            decoding=DECODING,
            cache_dir=None,
        )
