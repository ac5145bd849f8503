"""Checks of a run's settings that need nothing loaded: every problem at once, before the
data, the model or the method cost any time.

``generation.*``, ``data.*`` (the split settings every benchmark shares), ``metrics.*``,
``cache.*``, ``paths.cache_dir`` (is it writable?) and a saved artefact given by path
(``method.vectors``: a readable safetensors header) are checked here; a method's and a
benchmark's own keys are checked by their constructors, which run before the model loads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calib.errors import ConfigError

ON_TOO_LONG = ("skip", "error")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def generation_problems(cfg: DictConfig) -> list[str]:
    problems = []
    for key, minimum, hint in (
        ("generation.batch_size", 1, "prompts per forward pass, e.g. 8"),
        ("generation.max_new_tokens", 1, "the cap on generated tokens, e.g. 96"),
    ):
        value = _get(cfg, key)
        if not _is_int(value) or value < minimum:
            problems.append(f"{key}={value!r} must be an integer >= {minimum} ({hint})")
    tokens = _get(cfg, "generation.max_batch_tokens")
    if tokens is not None and (not _is_int(tokens) or tokens < 1):
        problems.append(
            f"generation.max_batch_tokens={tokens!r} must be null (no bound) or an integer >= 1 "
            "(prompt + new tokens summed over a batch, e.g. 32768)"
        )
    if not isinstance(_get(cfg, "generation.do_sample"), bool):
        problems.append(
            f"generation.do_sample={_get(cfg, 'generation.do_sample')!r} must be true or false"
        )
    temperature = _get(cfg, "generation.temperature")
    if not _is_number(temperature) or temperature <= 0:
        problems.append(f"generation.temperature={temperature!r} must be a number > 0, e.g. 1.0")
    top_p = _get(cfg, "generation.top_p")
    if not _is_number(top_p) or not 0 < top_p <= 1:
        problems.append(f"generation.top_p={top_p!r} must be a number in (0, 1], e.g. 1.0")
    threads = _get(cfg, "threads")
    if threads is not None and (not _is_int(threads) or threads < 1):
        problems.append(f"threads={threads!r} must be null (automatic) or an integer >= 1")
    if not _is_int(_get(cfg, "seed")):
        problems.append(f"seed={_get(cfg, 'seed')!r} must be an integer")
    return problems


def data_problems(cfg: DictConfig) -> list[str]:
    """The settings every benchmark config has (a benchmark checks its own keys)."""
    problems = []
    for key, hint in (
        ("calibration_fraction", "(0 = no calibration split; 0.2 = a fifth of the query groups)"),
        ("validation_fraction", "(the share of the calibration split held out to select on)"),
    ):
        if key not in cfg.data:
            continue
        value = cfg.data[key]
        if not _is_number(value) or not 0 <= value < 1:
            problems.append(f"data.{key}={value!r} must be a number in [0, 1) {hint}")
    limit = _get(cfg, "data.limit")
    if "limit" in cfg.data and limit is not None and (not _is_int(limit) or limit < 2):
        problems.append(f"data.limit={limit!r} must be null (all samples) or an integer >= 2")
    too_long = _get(cfg, "data.on_too_long")
    if "on_too_long" in cfg.data and too_long not in ON_TOO_LONG:
        problems.append(
            f"data.on_too_long={too_long!r} must be skip (drop prompts longer than the model's "
            "context, counted in metrics.json) or error"
        )
    return problems


def metrics_problems(cfg: DictConfig) -> list[str]:
    problems = []
    n_boot = _get(cfg, "metrics.n_boot")
    if not _is_int(n_boot) or n_boot < 0:
        problems.append(f"metrics.n_boot={n_boot!r} must be an integer >= 0 (0 = no intervals)")
    confidence = _get(cfg, "metrics.confidence")
    if not _is_number(confidence) or not 0 < confidence < 1:
        problems.append(f"metrics.confidence={confidence!r} must be a number in (0, 1), e.g. 0.95")
    if not isinstance(_get(cfg, "cache.enabled"), bool):
        problems.append(f"cache.enabled={_get(cfg, 'cache.enabled')!r} must be true or false")
    return problems


def cache_dir_problem(cache_dir: str | os.PathLike) -> str | None:
    """Why ``paths.cache_dir`` cannot be written (None when it can)."""
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        return (
            f"paths.cache_dir={folder} is not writable ({err.strerror or err}): it holds tiny "
            "models, rendered images and caches; set paths.cache_dir to a writable folder "
            "(e.g. paths.cache_dir=/tmp/vsc-calib-cache). cache.enabled=false turns off only the "
            "generation cache; tiny models and rendered images still need the folder"
        )
    return None


def artefact_problems(cfg: DictConfig) -> list[str]:
    """A method's saved artefact given by path (``method.vectors``): a readable safetensors
    file, checked by its header (cheap), before the model loads."""
    path = OmegaConf.select(cfg, "method.vectors", default=None)
    if path is None:
        return []
    fix = (
        "point it at the steering_vectors.safetensors a run wrote (<run>/method/), or drop "
        "method.vectors to fit the vectors anew"
    )
    if not Path(str(path)).is_file():
        return [f"method.vectors={path} does not exist: {fix}"]
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            handle.metadata()
    except Exception as err:  # safetensors raises its own error types for a bad header
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [f"method.vectors={path} is not a safetensors file ({reason}): {fix}"]
    return []


def check_settings(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every bad ``generation.*``/``data.*``/``metrics.*``/
    ``cache.*`` value and an unwritable ``paths.cache_dir``."""
    problems = [*generation_problems(cfg), *data_problems(cfg), *metrics_problems(cfg)]
    problems += artefact_problems(cfg)
    cache_problem = cache_dir_problem(cfg.paths.cache_dir)
    if cache_problem:
        problems.append(cache_problem)
    if problems:
        raise ConfigError(problems)
