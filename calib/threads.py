"""Threads per job: jobs that run side by side on one machine share its cores.

torch and the BLAS libraries start one thread per core in every process, so two parallel
jobs on two cores run many times slower than with one thread each (measure it with
``scripts/bench_threads.py``). ``threads`` (conf/config.yaml) sets a job's torch threads;
``null`` picks cores ÷ jobs running at once under a parallel launcher on this machine
(hydra-joblib-launcher's ``n_jobs``, submitit's local launcher), the launcher's
``cpus_per_task`` when it sets one, and leaves torch's default for single runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("calib.threads")

SWEEP_JOBS_ENV = "CALIB_SWEEP_JOBS"  # set by calib-run -m for its jobs: how many the sweep has


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parallel_jobs(launcher: Mapping[str, Any], sweep_jobs: int | None, cores: int) -> int | None:
    """How many jobs of this sweep run at once on this machine (None: not a local parallel
    launcher, or unknown)."""
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = launcher.get("n_jobs", -1)
        n = cores if n_jobs is None or n_jobs < 0 else int(n_jobs)
    elif "LocalLauncher" in target:
        n = int(launcher.get("array_parallelism") or 256)
    else:
        return None
    if sweep_jobs:
        n = min(n, sweep_jobs)
    return max(1, n)


def threads_for_job(
    threads: int | None,
    launcher: Mapping[str, Any] | None,
    *,
    sweep_jobs: int | None = None,
    cores: int | None = None,
) -> int | None:
    """The torch threads of one job (None: keep torch's default)."""
    if threads is not None:
        return int(threads)
    if not launcher:
        return None
    cores = cpu_count() if cores is None else cores
    cpus = launcher.get("cpus_per_task")
    if cpus:
        return max(1, int(cpus))
    parallel = parallel_jobs(launcher, sweep_jobs, cores)
    if parallel is None:
        return None
    return max(1, cores // parallel)


def sweep_size(overrides: Sequence[str]) -> int | None:
    """Jobs a ``-m`` command line sweeps over (the product of its comma lists and ranges);
    None when it cannot tell (a sweeper's own search space)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(
            [o for o in overrides if "=" in o and not o.startswith("-")]
        )
    except Exception:  # an override Hydra will reject itself, with its own message
        return None
    size = 1
    for override in parsed:
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def apply_threads(n: int | None) -> None:
    if n is None:
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("torch threads for this job: %d", n)
