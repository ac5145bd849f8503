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
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from calib.cli.common import config_dir, user_error_message
from calib.errors import USER_ERRORS
from calib.pipeline import run
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


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the validation part's mean SRA (``validation.mean``) for Hydra sweepers
    (Optuna): a sweep selects on validation; the evaluation figures are only reported."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, run_dir)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {resume_hint(cfg)}.", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records this job as failed and runs the others
        print(user_error_message(PROG, error), file=sys.stderr)
        raise SystemExit(2) from None
    print(f"\n{summary_lines(metrics)}\n\nrun folder: {run_dir}")
    problem = unjudged_problem(metrics["judge"])
    if problem is not None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.warning(problem.message)  # the sweep goes on; the job's files say it
        else:
            print(user_error_message(PROG, problem.message), file=sys.stderr)
            raise SystemExit(UNJUDGED_EXIT_CODE)
    return objective(metrics)


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
