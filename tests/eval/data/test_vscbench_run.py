"""End to end on VSCBench's layout: spreadsheets + a synthetic image archive, tiny model."""

from __future__ import annotations

import json

import pytest

from calib.cli.common import compose_config
from calib.io import read_jsonl
from calib.pipeline import run
from tests.conftest import TINY_RUN


@pytest.mark.slow
def test_vscbench_limit_24_runs_end_to_end(synthetic_root, tmp_path):
    overrides = [
        "data=vscbench",
        f"data.root={synthetic_root}",
        "data.limit=24",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "generation.max_new_tokens=8",
        "metrics.n_boot=10",
        "utility=none",
    ]
    cfg = compose_config(overrides=[*TINY_RUN, *overrides])
    metrics = run(cfg, tmp_path / "out")

    data, run_info = metrics["data"], metrics["run"]
    assert data["source"] == "vscbench" and data["total"] == 3600 + 450
    assert run_info["n_fit"] + run_info["n_validation"] + run_info["n_evaluation"] == 24
    assert data["fit"]["size"] == run_info["n_fit"]
    assert data["validation"]["size"] == run_info["n_validation"] == metrics["validation"]["n"]
    rows = read_jsonl(tmp_path / "out" / "responses.jsonl")
    assert len(rows) == run_info["n_evaluation"] == data["evaluation"]["size"]
    assert {r["condition"] for r in rows} <= {
        "image",
        "txt",
        "search",
        "typography",
        "concat",
        "figstep",
    }
    assert {r["label"] for r in rows} == {"safe", "unsafe"}
    overall = metrics["vscbench"]["overall"]
    assert overall["mean"] == pytest.approx((overall["sra_u"] + overall["sra_s"]) / 2)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["vscbench"] == json.loads(json.dumps(metrics["vscbench"]))
