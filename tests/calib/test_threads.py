"""Threads per job under parallel launchers: cores ÷ jobs running at once, overridable."""

from __future__ import annotations

from calib.threads import sweep_size, threads_for_job

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
LOCAL = {
    "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "cpus_per_task": None,
    "array_parallelism": 256,
}


def test_parallel_jobs_share_the_cores():
    assert threads_for_job(None, {**JOBLIB, "n_jobs": 2}, cores=2) == 1
    assert threads_for_job(None, {**JOBLIB, "n_jobs": 2}, cores=16) == 8
    assert threads_for_job(None, {**JOBLIB, "n_jobs": -1}, cores=8) == 1
    assert threads_for_job(None, LOCAL, sweep_jobs=2, cores=2) == 1
    assert threads_for_job(None, LOCAL, sweep_jobs=4, cores=16) == 4
    assert threads_for_job(None, {**LOCAL, "array_parallelism": 2}, sweep_jobs=8, cores=8) == 4
    assert threads_for_job(None, {**LOCAL, "cpus_per_task": 3}, sweep_jobs=8, cores=8) == 3


def test_an_explicit_setting_wins_and_single_runs_keep_the_default():
    assert threads_for_job(5, {**JOBLIB, "n_jobs": 2}, cores=2) == 5
    assert threads_for_job(None, None, cores=8) is None
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    assert threads_for_job(None, slurm, cores=64) is None  # one job per allocation


def test_sweep_size_counts_the_command_line_sweep():
    assert sweep_size(["-m", "method=none,prompting", "seed=0,1,2", "data.limit=8"]) == 6
    assert sweep_size(["seed=range(4)"]) == 4
    assert sweep_size(["seed=1"]) == 1
