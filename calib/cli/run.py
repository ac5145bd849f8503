"""``calib-run``: one run (or, with -m, a sweep) of a VLM with a calibration method.

    calib-run                                   # the defaults: see conf/config.yaml
    calib-run model=llava-1.5-7b method=prompting data=vscbench data.root=/data/vscbench
    calib-run -m method=none,prompting          # a sweep; then calib-compare <sweep folder>

A Hydra application: ``--help`` lists the config groups and the composed config, ``--cfg job``
prints the config without running, ``-m`` runs a sweep through the configured launcher.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from calib.cli.common import config_dir, user_error_message
from calib.errors import USER_ERRORS
from calib.pipeline import run
from calib.secrets import override_secrets, secret_override_message
from calib.threads import SWEEP_JOBS_ENV, apply_threads, sweep_size, threads_for_job
from eval.judges.summary import UNJUDGED_EXIT_CODE, unjudged_problem
from eval.report import summary_lines

PROG = "calib-run"
log = logging.getLogger("calib.cli.run")


def resume_hint(cfg: DictConfig) -> str:
    if cfg.cache.enabled:
        return (
            "finished batches are in the generation cache: re-run the same command to resume "
            "(only missing responses are generated)"
        )
    return "nothing was kept (cache.enabled=false)"


#: Run folders of the sweep jobs (run in this process) that stopped on a project error.
FAILED_JOBS: list[str] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and ``kill`` send), handled like Ctrl-C: the cache keeps what was
    done and the run says how to resume."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def install_sigterm_handler() -> bool:
    """Turn SIGTERM into :class:`Terminated`, unless a handler is already installed (submitit
    installs its own in a job: it requeues a preempted or timed-out job, see
    conf/hydra/launcher/slurm.yaml). Returns whether this handler was installed."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def set_threads(cfg: DictConfig) -> None:
    """torch threads per job: ``threads``, or cores ÷ parallel jobs under a local parallel
    launcher (:mod:`calib.threads`)."""
    launcher = None
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)
    jobs = os.environ.get(SWEEP_JOBS_ENV)
    apply_threads(threads_for_job(cfg.threads, launcher, sweep_jobs=int(jobs) if jobs else None))


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """Returns the validation part's mean SRA (``validation.mean``) for Hydra sweepers
    (Optuna): a sweep selects on validation; the evaluation figures are only reported."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:
        install_sigterm_handler()  # a job process of a local launcher (submitit keeps its own)
    set_threads(cfg)
    try:
        metrics = run(cfg, run_dir)
    except Terminated:
        print(f"\nterminated (SIGTERM): {resume_hint(cfg)}.", file=sys.stderr)
        raise SystemExit(143) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: {resume_hint(cfg)}.", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as error:
        print(user_error_message(PROG, error), file=sys.stderr)
        if multirun:  # the sweep goes on; the job's folder says why it failed
            FAILED_JOBS.append(str(run_dir))
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").write_text(f"{error}\n", encoding="utf-8")
            return math.nan  # what sweepers record as a failed trial
        raise SystemExit(2) from None
    print(f"\n{summary_lines(metrics)}\n\nrun folder: {run_dir}")
    problem = unjudged_problem(metrics["judge"])
    if problem is not None:
        if multirun:
            log.warning(problem.message)  # the sweep goes on; the job's files say it
        else:
            print(user_error_message(PROG, problem.message), file=sys.stderr)
            raise SystemExit(UNJUDGED_EXIT_CODE)
    return objective(metrics)


def main() -> None:
    """``calib-run``: refuse secrets on the command line before Hydra writes anything, turn
    SIGTERM into a resumable stop, then run the Hydra application."""
    secrets = override_secrets(sys.argv[1:])
    if secrets:
        print(user_error_message(PROG, secret_override_message(secrets)), file=sys.stderr)
        raise SystemExit(2)
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        jobs = sweep_size(sys.argv[1:])
        if jobs:
            os.environ[SWEEP_JOBS_ENV] = str(jobs)  # the jobs inherit it (threads per job)
    install_sigterm_handler()
    hydra_main()
    if FAILED_JOBS:
        print(
            f"{PROG}: {len(FAILED_JOBS)} sweep job(s) failed (see error.txt in each): "
            + ", ".join(FAILED_JOBS),
            file=sys.stderr,
        )
        raise SystemExit(2)


def objective(metrics: dict) -> float:
    """``validation.mean`` (:data:`calib.pipeline.OBJECTIVE`); NaN, which sweepers record as a
    failed trial, when the validation part lacks a safe or an unsafe sample."""
    value = metrics["validation"]["mean"]
    if value is None:
        log.warning(
            "validation.mean is undefined (validation part: %s samples, %s safe, %s unsafe): "
            "a sweep has nothing to select on; raise data.validation_fraction",
            metrics["validation"]["n"],
            metrics["validation"]["n_safe"],
            metrics["validation"]["n_unsafe"],
        )
        return math.nan
    return value


if __name__ == "__main__":
    main()
