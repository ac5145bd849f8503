"""Building a run's parts from the config (method, judge, utility set, logger, model,
data) and fitting the method on the fit part."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import call, instantiate
from omegaconf import DictConfig, OmegaConf

from calib.errors import USER_ERRORS, ConfigError
from calib.model import VLM, load_vlm
from calib.types import (
    CalibrationMethod,
    Judge,
    RunLogger,
    Sample,
    UtilitySet,
)
from eval.data.base import DataSplits


def build(factory: Any, node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate``/``call`` a config node, surfacing the project's own errors unwrapped.

    Hydra wraps what a constructor raises in ``InstantiationException``; a ``ConfigError``
    or ``DataError`` already names the key and the fix, so the user sees it as it is.
    """
    try:
        return factory(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def protocol_members(protocol: type) -> list[str]:
    """The methods and attributes a ``typing.Protocol`` requires, in definition order."""
    names = list(getattr(protocol, "__annotations__", {}))
    names += [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return list(dict.fromkeys(names))


def check_protocol(obj: Any, protocol: type, key: str, node: DictConfig) -> Any:
    """``obj`` if it has every member of ``protocol``; else a ConfigError naming what lacks."""
    missing = [name for name in protocol_members(protocol) if not hasattr(obj, name)]
    if missing:
        target = OmegaConf.select(node, "_target_", default=type(obj).__qualname__)
        raise ConfigError(
            f"{key}._target_={target} builds a {type(obj).__name__} without "
            f"{', '.join(missing)}, which calib.types.{protocol.__name__} requires: add "
            f"{'them' if len(missing) > 1 else 'it'} (see the README, 'Add your own method')"
        )
    return obj


RUN_DATA_KEYS = ("on_too_long",)


def load_data(cfg: DictConfig) -> DataSplits:
    """The calibration and evaluation splits of the configured benchmark."""
    node = OmegaConf.to_container(cfg.data, resolve=True)
    for key in RUN_DATA_KEYS:
        node.pop(key, None)
    return build(call, OmegaConf.create(node))


def load_model(cfg: DictConfig) -> VLM:
    return load_vlm(cfg.model, cache_dir=Path(cfg.paths.cache_dir))


def build_method(cfg: DictConfig) -> CalibrationMethod:
    method = build(instantiate, cfg.method, _convert_="all")
    return check_protocol(method, CalibrationMethod, "method", cfg.method)


def build_judge(cfg: DictConfig) -> Judge:
    return check_protocol(build(instantiate, cfg.judge, _convert_="all"), Judge, "judge", cfg.judge)


def build_utility(cfg: DictConfig) -> UtilitySet:
    """The utility set scored beside safety (``utility=none`` has no items: skipped)."""
    utility = build(instantiate, cfg.utility, _convert_="all")
    return check_protocol(utility, UtilitySet, "utility", cfg.utility)


def build_logger(cfg: DictConfig) -> RunLogger:
    return check_protocol(
        build(instantiate, cfg.logger, _convert_="all"), RunLogger, "logger", cfg.logger
    )


def accepts_validation(method: CalibrationMethod) -> bool:
    """Whether the method's ``fit`` takes the validation part (a ``validation`` keyword)."""
    return "validation" in inspect.signature(method.fit).parameters


def check_data(method: CalibrationMethod, splits: DataSplits) -> None:
    """A method's checks of the data it will be fitted on (``check_data(fit, validation)``,
    optional), run before the model loads: a too-small split shows at once."""
    check = getattr(method, "check_data", None)
    if callable(check):
        check(splits.fit, splits.validation)


def fit_method(
    method: CalibrationMethod,
    vlm: VLM,
    fit: Sequence[Sample],
    run_dir: Path,
    validation: Sequence[Sample] = (),
) -> None:
    """Fit the method on the fit part (and, if it selects settings itself, give it the
    validation part); its artifacts go into ``<run_dir>/method``."""
    workdir = run_dir / "method"
    workdir.mkdir(parents=True, exist_ok=True)
    if accepts_validation(method):
        method.fit(vlm, fit, workdir, validation=validation)
    else:
        method.fit(vlm, fit, workdir)


def check_fitted_apart(method: CalibrationMethod, evaluation: Sequence[Sample]) -> None:
    """A method that reports what it was fitted on (``trained_on()``: a reused adapter or
    vectors) must not have seen the evaluation split, unless ``method.allow_overlap=true``."""
    trained_on = getattr(method, "trained_on", None)
    if trained_on is None:
        return
    overlap = sorted(set(trained_on()) & {s.id for s in evaluation})
    if overlap and not getattr(method, "allow_overlap", False):
        raise ConfigError(
            f"the method's fitted artefact (method.adapter / method.vectors) was trained on "
            f"{len(overlap)} sample(s) of this run's evaluation split, e.g. {overlap[:3]}: its "
            "figures would be inflated. Fit it anew (drop method.adapter / method.vectors), "
            "evaluate on other data, or set method.allow_overlap=true to run anyway."
        )


def method_report(method: CalibrationMethod) -> dict[str, Any]:
    """``metrics["method"]``: what the method says about its fitting (``report()``, optional)."""
    report = getattr(method, "report", None)
    return dict(report()) if callable(report) else {}
