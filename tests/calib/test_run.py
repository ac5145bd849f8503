"""End to end: the baseline journey on the embedded default writes consistent files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from calib.io import read_jsonl
from calib.run import run

CONF = Path(__file__).resolve().parents[2] / "conf"
FAST = ["generation.max_new_tokens=12", "metrics.n_boot=20"]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=[*FAST, *overrides])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(f"paths.cache_dir={root / 'cache'}")
    return root / "out", run(cfg, root / "out")


def test_run_writes_every_file(baseline):
    run_dir, metrics = baseline
    for name in ("config.yaml", "responses.jsonl", "report.md", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))


def test_counts_are_consistent(baseline):
    run_dir, metrics = baseline
    rows = read_jsonl(run_dir / "responses.jsonl")
    assert len(rows) == metrics["run"]["n_evaluation"]
    assert len({r["id"] for r in rows}) == len(rows)
    by_label = Counter(r["label"] for r in rows)
    safety = metrics["safety"]
    excluded = sum(safety["n_excluded"].values())
    assert safety["n_safe"] + safety["n_unsafe"] + excluded == len(rows)
    assert by_label["safe"] + by_label["unsafe"] == len(rows)
    assert sum(metrics["judge"]["counts"].values()) == len(rows)
    for key in ("sra_u", "sra_s", "mean"):
        value = safety[key]
        assert value is None or 0.0 <= value <= 1.0
    expected_keys = {"id", "label", "category", "condition", "prompt", "response", "judge"}
    assert expected_keys <= set(rows[0])


def test_report_names_what_ran(baseline):
    run_dir, _ = baseline
    report = (run_dir / "report.md").read_text()
    assert "SRA_u" in report and "By category" in report


@pytest.mark.slow
def test_cli_prints_summary(tmp_path):
    """`python -m calib.run` as a user runs it: exit 0, summary printed, run folder filled."""
    run_dir = tmp_path / "cli_run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.run",
            *FAST,
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SRA_u" in result.stdout and "SRA_s" in result.stdout
    assert (run_dir / "metrics.json").is_file()


def test_bad_model_path_names_the_key(tmp_path):
    cfg = compose_cfg(f"paths.cache_dir={tmp_path}", "model.id=/no/such/model", "model.tiny=null")
    with pytest.raises(Exception, match=r"model\.id") as info:
        run(cfg, tmp_path / "out")
    assert "model=tiny" in str(info.value)
    assert not (tmp_path / "out" / "metrics.json").exists()
