"""Sweeps through hydra-submitit-launcher: a real 2-job local multirun, and the SLURM config.

``hydra/launcher=submitit_local`` goes through the same path as ``hydra/launcher=slurm``
(each job is pickled, started in a fresh process, unpickled and run), so it checks that the
project is importable there and that two jobs share one cache. The SLURM config is checked
by rendering the sbatch script submitit would submit (no cluster here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from calib.cli.common import compose_config, config_dir
from tests.conftest import TINY_RUN

CONF = config_dir()
FAST = ["generation.max_new_tokens=8", "metrics.n_boot=0", "data.limit=16", "utility=none"]


@pytest.mark.slow
def test_two_job_multirun_completes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.cli.run",
            "-m",
            *TINY_RUN,
            "hydra/launcher=submitit_local",
            "method=none",
            "seed=0,1",
            *FAST,
            f"hydra.sweep.dir={sweep_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # workers must import the installed project, not the launch folder
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    metrics = sorted(sweep_dir.glob("*/metrics.json"))
    assert len(metrics) == 2, sorted(p.name for p in sweep_dir.iterdir())
    seeds = {json.loads(p.read_text())["run"]["seed"] for p in metrics}
    assert seeds == {0, 1}
    assert (tmp_path / "cache" / "generations").is_dir()


def launcher_config(*overrides: str) -> dict:
    cfg = compose_config(overrides=[*TINY_RUN, *overrides], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False)


def test_slurm_config_renders_an_sbatch_script(tmp_path):
    """Every key of conf/hydra/launcher/slurm.yaml is one submitit's SLURM executor accepts."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    params = launcher_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert params["_target_"].endswith("SlurmLauncher")
    for key in ("_target_", "submitit_folder", "max_num_timeout"):  # launcher/executor-level
        params.pop(key)
    params["name"] = "calib-run"
    renames = SlurmExecutor._equivalence_dict()
    sbatch_params = {renames.get(k, k): v for k, v in params.items()}
    sbatch_params["mem"] = f"{sbatch_params['mem']}GB"
    script = _make_sbatch_string(
        command="python -m calib.cli.run", folder=tmp_path, **sbatch_params
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --time=240",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
    ):
        assert line in script, script


def test_local_launcher_config_composes():
    params = launcher_config("hydra/launcher=local")
    assert params["_target_"].endswith("LocalLauncher") and params["timeout_min"] == 120
