"""Run folders: same-second runs get folders of their own; a re-run in a reused folder never
leaves the previous run's results beside its own config."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calib.cli.common import compose_config
from calib.errors import ConfigError
from calib.pipeline import evaluate
from calib.runfolder import LOCK_FILE, start_run
from tests.conftest import TINY_RUN

# A process that composes calib-run's config with the clock frozen at one second and prints
# the run folder Hydra would give it: what three runs started in the same second see.
RESOLVE = textwrap.dedent(
    """
    import sys, time
    from hydra.core.hydra_config import HydraConfig
    from calib.cli.common import compose_config
    import hydra.core.utils
    from datetime import datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 1, 12, 0, 0)

    hydra.core.utils.datetime = Frozen  # what Hydra's ${now:...} reads
    cfg = compose_config(["model=tiny", "data=sample", "utility=sample",
                          f"paths.outputs_dir={sys.argv[1]}", f"seed={sys.argv[2]}"],
                         return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as Hydra does before it resolves the folder
    time.sleep(float(sys.argv[3]))
    print(cfg.hydra.run.dir)
    print(cfg.hydra.run.dir)
    """
)


def test_three_runs_in_the_same_second_get_three_folders(tmp_path):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RESOLVE, str(tmp_path), str(seed), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(3)
    ]
    folders = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        first, again = out.split()
        assert first == again, "one process resolves its folder once"
        folders.append(first)
    assert len(set(folders)) == 3, folders
    base = tmp_path / "2026-01-01" / "12-00-00_tiny_none"
    assert sorted(folders) == sorted(str(base) + s for s in ("", "_2", "_3"))
    assert all(Path(f).is_dir() for f in folders), "each folder is created when claimed"


def test_a_failed_rerun_in_a_reused_folder_leaves_no_metrics(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = {"run": {"seed": 0}, "safety": {"mean": 0.9}}
    (run_dir / "metrics.json").write_text(json.dumps(old))
    (run_dir / "report.md").write_text("old report")
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "old.png").write_bytes(b"png")
    cfg = compose_config(
        [
            *TINY_RUN,
            "seed=1",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "data=vscbench",
            f"data.root={tmp_path / 'no_such_archive'}",
        ]
    )
    with pytest.raises(Exception, match="no_such_archive"):
        evaluate(cfg, run_dir)
    assert "seed: 1" in (run_dir / "config.yaml").read_text()
    assert not (run_dir / "metrics.json").exists(), "a stale metrics.json survived the re-run"
    assert not (run_dir / "report.md").exists() and not (run_dir / "plots").exists()
    assert not (run_dir / LOCK_FILE).exists(), "the folder's lock is released after a failure"


def test_two_live_runs_in_one_folder_is_an_error(tmp_path):
    lock = start_run(tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"hydra\.run\.dir=.* is in use by another run"):
            start_run(tmp_path)
    finally:
        lock.release()
    start_run(tmp_path).release()  # free again once the first run is over
