"""``calib-run``: one run (or, with -m, a sweep) of a VLM with a calibration method.

    calib-run                                   # the defaults: see conf/config.yaml
    calib-run model=llava-1.5-7b method=prompting data=vscbench data.root=/data/vscbench
    calib-run -m method=none,prompting          # a sweep; then calib-compare <sweep folder>

A Hydra application: ``--help`` lists the config groups and the composed config, ``--cfg job``
prints the config without running, ``-m`` runs a sweep through the configured launcher.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from calib.cli.common import config_dir, user_error_message
from calib.errors import USER_ERRORS
from calib.pipeline import run
from eval.report import summary_lines

PROG = "calib-run"


def resume_hint(cfg: DictConfig) -> str:
    if cfg.cache.enabled:
        return (
            "finished batches are in the generation cache: re-run the same command to resume "
            "(only missing responses are generated)"
        )
    return "nothing was kept (cache.enabled=false)"


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the safety mean, so Hydra sweepers (Optuna) can optimise it."""
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
    return metrics["safety"]["mean"]


if __name__ == "__main__":
    main()
