"""Run folders: one per run, claimed atomically, and never holding a previous run's results.

- :func:`unique_dir` gives each run a folder of its own even when several start in the same
  second: the folder is created with ``mkdir`` (atomic: exactly one process creates a
  name), and a process that finds the name taken claims ``<name>_2``, ``<name>_3``, ...
  ``conf/hydra/default.yaml`` names run and sweep folders through it
  (``${calib_unique:...}``, registered by :mod:`calib.cli.common`).
- :func:`start_run` is the first thing a run does in its folder: it takes the folder's
  lock (two live runs in one folder, e.g. ``hydra.run.dir=X`` twice at once, is an error)
  and deletes the results of a previous run there, so that a re-run that fails leaves no
  ``metrics.json`` that is not its own.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from calib.errors import ConfigError
from calib.locks import FileLock, owner

#: What a run writes as results; a run starting in a folder removes a previous run's.
RESULT_FILES = ("metrics.json", "report.md", "responses.jsonl", "utility_responses.jsonl")
RESULT_DIRS = ("plots",)
LOCK_FILE = ".run.lock"  # held by the run working in the folder

_claimed: dict[str, str] = {}
_claim_guard = threading.Lock()


def unique_dir(base: str) -> str:
    """Create and return ``base``, or ``base_2``, ``base_3``... if taken (once per process:
    the same ``base`` always gives this process the folder it claimed first)."""
    with _claim_guard:
        if base in _claimed:
            return _claimed[base]
        path = Path(base)
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate, n = path, 1
        while True:
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                n += 1
                candidate = path.with_name(f"{path.name}_{n}")
        _claimed[base] = str(candidate)
        return str(candidate)


def start_run(run_dir: Path) -> FileLock:
    """Lock ``run_dir`` for this run and remove a previous run's results; returns the lock
    (release it when the run ends). Raises ConfigError when a live run holds the folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_FILE)
    if not lock.try_acquire():
        info = owner(run_dir / LOCK_FILE) or {}
        raise ConfigError(
            f"hydra.run.dir={run_dir} is in use by another run (pid {info.get('pid', '?')} "
            f"on {info.get('host', '?')}): wait for it, or give this run another "
            "hydra.run.dir (or leave it unset: every run then gets a folder of its own)"
        )
    for name in RESULT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RESULT_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
    return lock
