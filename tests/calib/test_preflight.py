"""Bad settings are reported at once, naming each key, before anything is loaded; the
programs print the project's errors as one message (exit 2), never under a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calib.cli.common import compose_config
from calib.errors import ConfigError
from calib.preflight import check_settings
from tests.conftest import TINY_RUN

NOISE = ("Traceback", "HYDRA_FULL_ERROR", "InstantiationException", "TypeError")


def _with_pins(overrides: tuple[str, ...]) -> list[str]:
    if overrides and overrides[0] in ("-m", "--multirun"):
        return [overrides[0], *TINY_RUN, *overrides[1:]]
    return [*TINY_RUN, *overrides]


def calib_run(*overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        # after Hydra's -m flag when there is one: it takes no overrides before it
        [sys.executable, "-m", "calib.cli.run", *_with_pins(overrides)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_every_bad_value_is_named_at_once(tmp_path):
    cfg = compose_config(
        [
            *TINY_RUN,
            f"paths.cache_dir={tmp_path}",
            "generation.batch_size=abc",
            "generation.max_new_tokens=abc",
            "generation.top_p=2",
            "data.calibration_fraction=abc",
            "data.limit=1",
            "metrics.n_boot=-1",
            "metrics.confidence=95",
        ]
    )
    with pytest.raises(ConfigError) as caught:
        check_settings(cfg)
    message = str(caught.value)
    assert "7 configuration problem(s)" in message
    for key in (
        "generation.batch_size='abc'",
        "generation.max_new_tokens='abc'",
        "generation.top_p=2",
        "data.calibration_fraction='abc'",
        "data.limit=1",
        "metrics.n_boot=-1",
        "metrics.confidence=95",
    ):
        assert key in message


def test_an_unwritable_cache_dir_names_the_key_and_the_fix(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = compose_config([*TINY_RUN, f"paths.cache_dir={blocker / 'cache'}"])
    with pytest.raises(ConfigError, match=r"paths\.cache_dir=.*a_file/cache is not writable"):
        check_settings(cfg)


@pytest.mark.parametrize("method", ["none", "few_shot"])
def test_calib_run_reports_bad_values_before_loading_anything(tmp_path, method):
    cache = tmp_path / "cache"
    done = calib_run(
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={cache}",
        f"method={method}",
        "generation.batch_size=0",
        "data.calibration_fraction=abc",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith("calib-run: error: 2 configuration problem(s):"), done.stderr
    assert "generation.batch_size=0 must be an integer >= 1" in done.stderr
    assert "method.generate_batch_size" not in done.stderr, "named as the user set it"
    assert "data.calibration_fraction='abc'" in done.stderr
    for noise in NOISE:
        assert noise not in done.stderr
    assert not any(cache.iterdir()), "nothing was loaded, built or cached"
    assert not any(Path(tmp_path / "run").glob("metrics.json"))


def test_a_garbage_vectors_file_names_the_key_and_the_file(tmp_path):
    garbage = tmp_path / "vectors.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    cfg = compose_config(
        [*TINY_RUN, f"paths.cache_dir={tmp_path}", "method=steering", f"method.vectors={garbage}"]
    )
    with pytest.raises(ConfigError, match=r"method\.vectors=.*vectors\.safetensors is not a"):
        check_settings(cfg)


def test_a_sweep_prints_each_jobs_error_once_and_exits_2(tmp_path):
    done = calib_run(
        "-m",
        f"paths.outputs_dir={tmp_path / 'out'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "generation.batch_size=0,1",
        "generation.max_new_tokens=abc",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("calib-run: error:") == 2, "each job's problems, once"
    assert "2 sweep job(s) failed" in done.stderr
    for noise in NOISE:
        assert noise not in done.stderr
    errors = sorted((tmp_path / "out").rglob("error.txt"))
    assert len(errors) == 2 and "generation.max_new_tokens='abc'" in errors[1].read_text()
