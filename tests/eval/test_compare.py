"""calib-compare on the folders of a real 2-job multirun of the tiny model, plus broken runs."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from calib.cli.common import compose_config, config_dir
from calib.cli.compare import main
from eval.compare import compare, find_runs, load_run, varying_settings
from eval.plots import pareto_front
from tests.conftest import TINY_RUN

PLOTS = {"sra_tradeoff.png", "safety_vs_utility.png", "by_category.png"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``calib-run -m method=none,prompting`` as a user runs it, then a run that died early."""
    root = tmp_path_factory.mktemp("compare")
    sweep_dir = root / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.cli.run",
            "-m",
            *TINY_RUN,
            *TINY_RUN,
            "method=none,prompting",
            f"hydra.sweep.dir={sweep_dir}",
            f"paths.cache_dir={root / 'cache'}",
            "generation.max_new_tokens=8",
            "metrics.n_boot=10",
            "data.limit=8",
            "utility.n_per_task=1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"},
        cwd=root,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    broken = sweep_dir / "2_lora"  # as a job killed before it wrote metrics.json leaves it
    (broken / ".hydra").mkdir(parents=True)
    (broken / ".hydra" / "overrides.yaml").write_text("- method=lora\n")
    (broken / "config.yaml").write_text("seed: 0\n")
    return sweep_dir


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.slow
def test_compare_prints_the_table_writes_plots_and_lists_the_broken_run(sweep, capsys):
    assert main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "| run | model | method |" in printed
    assert "0_none" in printed and "1_prompting" in printed
    assert "2_lora: no metrics.json" in printed  # listed, not crashed on
    out = sweep / "compare"
    assert {p.name for p in out.glob("*.png")} == PLOTS
    for name in PLOTS:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    rows = _read_csv(out / "comparison.csv")
    assert [r["method"] for r in rows] == ["none", "prompting"]
    for column in ("sra_u", "sra_u_lo", "sra_u_hi", "sra_s", "sra_s_strict", "mean", "utility"):
        assert all(r[column] != "" for r in rows), column
    assert rows[0]["delta_mean"] == "0.0" and rows[1]["delta_utility"] != ""
    metrics = [
        json.loads((sweep / n / "metrics.json").read_text()) for n in ("0_none", "1_prompting")
    ]
    expected = [m["validation"]["mean"] for m in metrics]
    assert [r["validation_mean"] for r in rows] == ["" if v is None else str(v) for v in expected]
    markdown = (out / "comparison.md").read_text()
    assert "Δ mean" in markdown and "2_lora" in markdown
    assert "validation mean (objective)" in markdown
    assert "Sweep objective: `validation.mean`" in markdown


@pytest.mark.slow
def test_settings_that_vary_get_their_own_column(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep / "0_none", copy / "0_none")
    shutil.copytree(sweep / "1_prompting", copy / "1_prompting")
    overrides = copy / "1_prompting" / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- method.position=system\n- seed=1\n")
    records = [load_run(p) for p in find_runs([copy])]
    assert varying_settings(records) == ["method.position", "seed"]
    compare([copy])
    rows = _read_csv(copy / "compare" / "comparison.csv")
    assert [r["seed"] for r in rows] == ["", "1"]


@pytest.mark.slow
def test_single_run_folders_and_a_corrupt_metrics_file(sweep, tmp_path):
    corrupt = tmp_path / "corrupt_run"
    shutil.copytree(sweep / "0_none", corrupt)
    (corrupt / "metrics.json").write_text('{"safety": ')
    records, out, plots = compare([sweep / "1_prompting", corrupt], out=tmp_path / "report")
    assert [r.ok for r in records] == [True, False]
    assert "metrics.json unreadable" in records[1].problem
    assert out == tmp_path / "report" and {p.name for p in plots} == PLOTS


def test_empty_and_missing_folders(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no run folders" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere")])


def test_pareto_front_keeps_the_undominated():
    points = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.5, 0.5), (0.9, 0.05)]
    assert pareto_front(points) == [0, 1, 3, 4]


def test_four_methods_experiment_sweeps_the_baseline_and_the_four_methods():
    from hydra.types import RunMode

    cfg = compose_config(overrides=[*TINY_RUN, "experiment=four_methods"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    methods = cfg.hydra.sweeper.params.method.split(",")
    assert methods == ["none", "prompting", "few_shot", "lora", "steering_cast"]
    assert all((config_dir() / "method" / f"{m}.yaml").is_file() for m in methods)
    assert cfg.utility._target_ == "eval.utility.sample.SampleUtility"  # scored beside safety
