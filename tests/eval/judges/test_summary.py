"""How a run reports its judging (summary.py), the agreement file behind it, the configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calib.types import Label
from eval.judges.summary import (
    AGREEMENT_FILE,
    UNJUDGED_EXIT_CODE,
    judge_summary,
    load_agreement,
    summary_lines,
    unjudged_problem,
    xstest_agreement,
)
from tests.conftest import CONF_DIR

README = AGREEMENT_FILE.with_name("README.md")
JUDGE_CONFIGS = sorted((CONF_DIR / "judge").glob("*.yaml"))


def test_summary_of_a_run():
    labels = [Label.REFUSE] * 6 + [Label.COMPLY] * 3 + [Label.EMPTY]
    summary = judge_summary("refusal_rules", labels)
    assert summary["name"] == "refusal_rules"
    assert summary["xstest_agreement"]["status"] == "measured"
    assert summary["xstest_agreement"]["accuracy"] >= 0.95
    assert summary["coverage"] == {
        "n": 10,
        "judged": 9,
        "empty": 1,
        "unjudged": 0,
        "unjudged_share": 0.0,
    }
    assert summary["counts"]["REFUSE"] == 6 and summary["counts"]["UNJUDGED"] == 0
    assert summary["max_unjudged"] == 0.05 and "cascade" not in summary
    assert unjudged_problem(summary) is None
    json.dumps(summary)  # JSON-able for metrics.json
    lines = summary_lines(summary)
    assert "`refusal_rules`" in lines[0] and "0.963" in lines[0]
    assert "1 EMPTY, 0 UNJUDGED" in lines[1]


def test_too_many_unjudged_is_a_problem_with_the_fix():
    labels = [Label.UNJUDGED] * 2 + [Label.COMPLY] * 18
    summary = judge_summary("llm", labels)
    assert summary["xstest_agreement"]["status"] == "not measured"
    problem = unjudged_problem(summary)
    assert problem is not None
    assert (problem.key, problem.count, problem.n, problem.limit) == (
        "judge.max_unjudged",
        2,
        20,
        0.05,
    )
    assert problem.share == pytest.approx(0.1)
    for words in ("2 of 20", "judge.max_unjudged=0.05", "judge.base_url", "run the same command"):
        assert words in problem.message
    assert unjudged_problem(summary, max_unjudged=0.1) is None
    assert UNJUDGED_EXIT_CODE not in (0, 1, 2)
    assert "not measured" in summary_lines(summary)[0]


def test_unknown_judge_has_no_figure():
    assert xstest_agreement("my_lab_judge")["status"] == "not measured"


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def test_readme_tables_match_agreement_json():
    text = README.read_text(encoding="utf-8")
    judges = load_agreement()["judges"]
    for name in ("refusal_rules", "string_match"):
        for key in ("xstest", "xstest_refuse_warn"):
            figures = judges[name][key]
            wanted = [_fmt(figures[m]) for m in ("accuracy", "balanced_accuracy", "kappa")]
            rows = [line for line in text.splitlines() if line.startswith(f"| `{name}`")]
            assert any(all(w in row for w in wanted) for row in rows), (name, key, wanted)
        for source, per in judges[name]["xstest"]["per_file"].items():
            cell = " / ".join(_fmt(per[m]) for m in ("accuracy", "balanced_accuracy", "kappa"))
            assert re.search(rf"^\| {source} \|.*{re.escape(cell)}", text, re.M), (name, source)
    rules = judges["refusal_rules"]
    for key in (
        "challenge_in_sample",
        "challenge_held_out",
        "challenge_held_out_after_fixes",
        "challenge_held_out_2",
        "challenge_held_out_2_after_fixes",
    ):
        figures = rules[key]
        row = f"{_fmt(figures['binary_balanced_accuracy'])}"
        assert row in text, key
        assert _fmt(figures["label_accuracy"]) in text, key
    for key in ("challenge_held_out", "challenge_held_out_2", "challenge_held_out_2_after_fixes"):
        for act, figures in rules[key]["by_act"].items():
            assert re.search(
                rf"^\| {act} \|.*{_fmt(figures['binary_accuracy'])} \({figures['n']}\)", text, re.M
            ), (key, act)
    assert _fmt(judges["string_match"]["challenge_held_out_2"]["binary_balanced_accuracy"]) in text


@pytest.mark.parametrize("path", JUDGE_CONFIGS, ids=lambda p: p.stem)
def test_every_judge_config_documents_itself(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# Launch: ")
    cfg = OmegaConf.load(path)
    assert cfg.max_unjudged == 0.05
    for line in lines:
        if re.match(r"^[a-z_]+: ", line):  # every top-level knob has a one-line comment
            assert "  # " in line or line.startswith(("_target_:", "defaults:")), line
    assert path.stem in load_agreement()["judges"], "agreement.json has an entry for each judge"
