"""End to end on VSCBench's layout: spreadsheets + a synthetic image archive, tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from calib.run import run

CONF = Path(__file__).resolve().parents[2] / "conf"


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
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    metrics = run(cfg, tmp_path / "out")

    assert metrics["run"]["n_calibration"] + metrics["run"]["n_evaluation"] == 24
    assert metrics["data"]["source"]
    halves = metrics["vscbench"]
    assert halves["image_centric"] is not None or halves["text_centric"] is not None
    assert (tmp_path / "out" / "metrics.json").is_file()
