"""The stages of a run, each a plain function a notebook can call on its own.

:func:`evaluate` strings them together in the order of the data's journey (DESIGN.md):
build method, judge, utility set -> load and check the model -> load data -> fit ->
generate -> judge -> score -> baseline deltas -> report (the model is loaded before the
data so that a broken checkpoint fails in seconds). :func:`run` wraps it with the configured logger;
``calib-run`` (:mod:`calib.cli.run`) is the Hydra entry point that calls it. From a
notebook::

    from calib.cli.common import compose_config
    from calib import pipeline

    cfg = compose_config(["method=prompting"])
    metrics = pipeline.evaluate(cfg, Path("outputs/notebook"))
"""

from calib.pipeline.build import (
    RUN_DATA_KEYS,
    accepts_validation,
    build,
    build_judge,
    build_logger,
    build_method,
    build_utility,
    check_data,
    check_fitted_apart,
    check_protocol,
    fit_method,
    load_data,
    load_model,
    method_report,
    protocol_members,
)
from calib.pipeline.generate import (
    decoding_settings,
    drop_too_long,
    generate_answers,
    open_cache,
    response_rows,
    too_long,
)
from calib.pipeline.journey import OBJECTIVE, evaluate, run, run_choices
from calib.pipeline.score import (
    VALIDATION_KEYS,
    baseline_figures,
    deltas_to_baseline,
    is_baseline,
    score,
    validation_figures,
)

__all__ = [
    "OBJECTIVE",
    "RUN_DATA_KEYS",
    "VALIDATION_KEYS",
    "accepts_validation",
    "baseline_figures",
    "build",
    "build_judge",
    "build_logger",
    "build_method",
    "build_utility",
    "check_data",
    "check_fitted_apart",
    "check_protocol",
    "decoding_settings",
    "deltas_to_baseline",
    "drop_too_long",
    "evaluate",
    "fit_method",
    "generate_answers",
    "is_baseline",
    "load_data",
    "load_model",
    "method_report",
    "open_cache",
    "protocol_members",
    "response_rows",
    "run",
    "run_choices",
    "score",
    "too_long",
    "validation_figures",
]
