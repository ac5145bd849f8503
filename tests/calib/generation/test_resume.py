"""Crash-safe resume: a run stopped with Ctrl-C, then one killed with SIGKILL, then one that
finishes; the last generates only what the others did not commit, and its
``responses.jsonl`` has every sample exactly once.

Each run is ``python -m calib.cli.run`` as a user starts it; batches are small and responses
long enough that the run is stopped part-way, once the cache holds some committed batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calib.generation.cache import GenerationCache
from calib.io import read_jsonl
from tests.conftest import TINY_RUN

BATCH = 1
# Long enough that a loaded machine still sees the run part-way (the tiny model writes
# ~20 responses a second at 48 tokens: a run must outlast the polling by a wide margin).
MAX_NEW_TOKENS = 192


def run_command(run_dir: Path, cache_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "calib.cli.run",
        *TINY_RUN,
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={cache_dir}",
        f"generation.batch_size={BATCH}",
        f"generation.max_new_tokens={MAX_NEW_TOKENS}",
        "metrics.n_boot=0",
        "utility=none",  # only the safety samples go through the cache
    ]


def committed_rows(cache_dir: Path) -> int:
    """Responses committed to the cache, as another process sees them."""
    with GenerationCache.in_dir(cache_dir) as cache:
        return cache.count()


def start_and_stop(command: list[str], cache_dir: Path, at_least: int, sig: int) -> tuple:
    """Start a run, wait until ``at_least`` responses are committed, send ``sig``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A test session started in the background inherits SIGINT ignored, and Python then
        # never turns Ctrl-C into KeyboardInterrupt: give the run the terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600
    while committed_rows(cache_dir) < at_least:
        assert process.poll() is None, f"run ended before it was stopped: {process.stderr.read()}"
        assert time.monotonic() < deadline, "the run committed nothing in 10 minutes"
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.mark.slow
def test_interrupted_and_killed_runs_resume(tmp_path):
    run_dir, cache_dir = tmp_path / "run", tmp_path / "cache"
    command = run_command(run_dir, cache_dir)

    code, _, err = start_and_stop(command, cache_dir, at_least=BATCH, sig=signal.SIGINT)
    assert code == 130, err[-3000:]
    assert "re-run the same command to resume" in err
    assert "Traceback" not in err, err[-3000:]
    after_interrupt = committed_rows(cache_dir)

    code, _, _ = start_and_stop(
        command, cache_dir, at_least=after_interrupt + 2 * BATCH, sig=signal.SIGKILL
    )
    assert code == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    committed = committed_rows(cache_dir)
    assert committed >= after_interrupt + 2 * BATCH

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    n = metrics["run"]["n_evaluation"]
    assert committed < n, "the killed run should have been stopped part-way"
    assert metrics["run"]["cached"] == committed
    assert metrics["run"]["generated"] == n - committed, "only the missing samples are generated"
    rows = read_jsonl(run_dir / "responses.jsonl")
    ids = [row["id"] for row in rows]
    assert len(ids) == n and len(set(ids)) == n
    # The validation part is generated (and cached) after the evaluation part.
    assert committed_rows(cache_dir) == n + metrics["run"]["n_validation"]


@pytest.mark.slow
def test_sigterm_stops_with_the_resume_hint(tmp_path):
    """What SLURM sends before it kills a preempted job: the run stops like Ctrl-C."""
    cache_dir = tmp_path / "cache"
    command = [*run_command(tmp_path / "run", cache_dir), "data.limit=24"]
    code, _, err = start_and_stop(command, cache_dir, at_least=BATCH, sig=signal.SIGTERM)
    assert code == 143, err[-3000:]
    assert "terminated (SIGTERM)" in err and "re-run the same command to resume" in err
    assert "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "run" / "metrics.json").exists()
