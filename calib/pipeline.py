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

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import call, instantiate
from omegaconf import DictConfig, OmegaConf

from calib.errors import USER_ERRORS, ConfigError, DataError
from calib.generation.cache import GenerationCache
from calib.generation.generate import Generation, context_length, generate, prompt_tokens
from calib.io import read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from calib.methods.none import FINGERPRINT as BASELINE_FINGERPRINT
from calib.methods.none import NoMethod
from calib.model import VLM, load_vlm
from calib.preflight import check_settings
from calib.runfolder import start_run
from calib.types import (
    CalibrationMethod,
    Judge,
    Label,
    RunLogger,
    Sample,
    UtilitySet,
)
from eval.data.base import DataSplits
from eval.deltas import Baseline, deltas
from eval.judges.summary import judge_summary
from eval.metrics import flatten, safety_metrics, vscbench_metrics
from eval.plots import run_plots
from eval.report import render_report
from eval.utility.base import score_utility

log = logging.getLogger("calib.pipeline")

#: What ``calib-run`` returns to Hydra sweepers (Optuna): the validation part's mean SRA.
#: The evaluation figures are reported, never optimised.
OBJECTIVE = "validation.mean"


# --- building the parts from the config ----------------------------------------------------


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


#: Keys of the ``data`` group the run reads itself (not passed to the loader).
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


# --- the stages ----------------------------------------------------------------------------


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


def decoding_settings(cfg: DictConfig) -> dict[str, Any]:
    gen = cfg.generation
    return {
        "max_new_tokens": gen.max_new_tokens,
        "do_sample": gen.do_sample,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "seed": cfg.seed,
    }


def open_cache(cfg: DictConfig) -> AbstractContextManager[GenerationCache | None]:
    """The generation cache shared by runs (``cache.enabled=false``: none)."""
    if not cfg.cache.enabled:
        return nullcontext()
    cache = GenerationCache.in_dir(cfg.paths.cache_dir)
    cache.check_writable()
    return cache


def generate_answers(
    cfg: DictConfig,
    vlm: VLM,
    method: CalibrationMethod,
    samples: Sequence[Sample],
    cache: GenerationCache | None,
    *,
    progress: bool = True,
) -> Generation:
    """One response per sample with the method active, as the config's decoding says."""
    return generate(
        vlm,
        method,
        samples,
        batch_size=cfg.generation.batch_size,
        decoding=decoding_settings(cfg),
        cache=cache,
        progress=progress,
        max_batch_tokens=cfg.generation.max_batch_tokens,
    )


def too_long(
    cfg: DictConfig, vlm: VLM, method: CalibrationMethod, samples: Sequence[Sample]
) -> list[tuple[Sample, int]]:
    """The samples whose prompt (as the method asks it) plus ``generation.max_new_tokens``
    exceed the model's context, with their prompt lengths in tokens."""
    context = context_length(vlm)
    if context is None or not samples:
        return []
    lengths = prompt_tokens(vlm, [method.conversation(s) for s in samples])
    budget = context - cfg.generation.max_new_tokens
    return [(s, n) for s, n in zip(samples, lengths, strict=True) if n > budget]


def drop_too_long(
    cfg: DictConfig, vlm: VLM, method: CalibrationMethod, splits: DataSplits
) -> DataSplits:
    """Validation and evaluation without the prompts longer than the model's context:
    ``data.on_too_long=skip`` drops them (counted in metrics.json under data.too_long),
    ``error`` stops. Never truncated: a cut prompt is another question."""
    over = {
        part: too_long(cfg, vlm, method, getattr(splits, part))
        for part in ("validation", "evaluation")
    }
    found = [(s, n) for pairs in over.values() for s, n in pairs]
    if not found:
        return splits
    context = context_length(vlm)
    examples = ", ".join(f"{s.id} ({n} tokens)" for s, n in found[:5])
    policy = OmegaConf.select(cfg, "data.on_too_long", default="error")
    if policy == "error":
        raise DataError(
            f"{len(found)} prompt(s) do not fit the model's context of {context} tokens with "
            f"generation.max_new_tokens={cfg.generation.max_new_tokens}: {examples}. Set "
            "data.on_too_long=skip to drop them (counted in metrics.json), lower "
            "generation.max_new_tokens, or use a model with a longer context"
        )
    log.warning(
        "skipped %d prompt(s) longer than the model's context (%d tokens with %d new): %s",
        len(found),
        context,
        cfg.generation.max_new_tokens,
        examples,
    )
    drop = {s.id for s, _ in found}
    info = {
        **splits.info,
        "too_long": {
            "skipped": len(found),
            "context": context,
            "max_new_tokens": cfg.generation.max_new_tokens,
            "ids": sorted(drop),
        },
    }
    return replace(
        splits,
        validation=[s for s in splits.validation if s.id not in drop],
        evaluation=[s for s in splits.evaluation if s.id not in drop],
        info=info,
    )


def response_rows(
    samples: Sequence[Sample],
    responses: Sequence[str],
    labels: Sequence[Label],
    judge: Judge | None = None,
) -> list[dict]:
    """The rows of ``responses.jsonl`` (a cascade judge adds both of its judges' labels)."""
    both = judge.last_report().per_sample() if hasattr(judge, "last_report") else {}
    return [
        {
            "id": s.id,
            "label": s.label,
            "category": s.category,
            "condition": s.condition,
            "prompt": s.prompt,
            "image": s.image,
            "response": r,
            "judge": lab.value,
            **{f"judge_{which}": value for which, value in both.get(s.id, {}).items()},
        }
        for s, r, lab in zip(samples, responses, labels, strict=True)
    ]


def score(
    cfg: DictConfig,
    samples: Sequence[Sample],
    labels: Sequence[Label],
    *,
    n_boot: int | None = None,
) -> dict[str, Any]:
    """Safety metrics of judged samples (bootstrap intervals as ``metrics.*`` says)."""
    return safety_metrics(
        samples,
        labels,
        n_boot=cfg.metrics.n_boot if n_boot is None else n_boot,
        seed=cfg.seed,
        confidence=cfg.metrics.confidence,
    )


VALIDATION_KEYS = ("sra_u", "sra_s", "sra_s_strict", "mean", "n_safe", "n_unsafe", "n_excluded")


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


def validation_figures(
    cfg: DictConfig,
    vlm: VLM,
    method: CalibrationMethod,
    judge: Judge,
    validation: Sequence[Sample],
    cache: GenerationCache | None,
) -> dict[str, Any]:
    """``metrics["validation"]``: the method's figures on the validation part, which
    sweeps optimise (no intervals: a selection criterion, not a report)."""
    if not validation:
        return {**dict.fromkeys(VALIDATION_KEYS), "n": 0}
    answers = generate_answers(cfg, vlm, method, validation, cache, progress=False)
    figures = score(cfg, validation, judge.label(validation, answers.responses), n_boot=0)
    return {**{k: figures[k] for k in VALIDATION_KEYS}, "n": len(validation)}


def is_baseline(method: CalibrationMethod) -> bool:
    """True when the method changes nothing (its outputs are the baseline's)."""
    return method.fingerprint() == BASELINE_FINGERPRINT


def baseline_figures(
    cfg: DictConfig,
    vlm: VLM,
    judge: Judge,
    samples: Sequence[Sample],
    utility_set: UtilitySet,
    utility_items: Sequence[Sample],
    cache: GenerationCache | None,
) -> Baseline:
    """The same model with no method, judged and scored like the run (cache first)."""
    everything = [*samples, *utility_items]
    generation = generate_answers(cfg, vlm, NoMethod(), everything, cache, progress=False)
    labels = judge.label(samples, generation.responses[: len(samples)])
    utility = None
    if utility_items:
        answers = generation.responses[len(samples) :]
        utility = score_utility(utility_set, utility_items, answers).summary
    return Baseline(
        score(cfg, samples, labels, n_boot=0), utility, generation.generated, generation.cached
    )


def deltas_to_baseline(
    cfg: DictConfig,
    vlm: VLM,
    method: CalibrationMethod,
    judge: Judge,
    samples: Sequence[Sample],
    utility_set: UtilitySet,
    utility_items: Sequence[Sample],
    metrics: dict[str, Any],
    cache: GenerationCache | None,
) -> dict[str, Any]:
    """This run minus the same model with ``method=none`` (its answers from the cache)."""
    if is_baseline(method):
        base = Baseline(metrics["safety"], metrics.get("utility"), generated=0, cached=0)
    else:
        base = baseline_figures(cfg, vlm, judge, samples, utility_set, utility_items, cache)
    return deltas(metrics["safety"], metrics.get("utility"), base)


def run_choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each config group was picked (from Hydra, when it is running)."""
    if HydraConfig.initialized():
        return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items()}
    return {}


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The journey; writes responses.jsonl, report.md, config.yaml and (last) metrics.json."""
    check_settings(cfg)  # every bad value at once, before anything loads
    lock = start_run(run_dir)  # this run's folder: no other live run, no stale results
    try:
        return _evaluate(cfg, run_dir)
    finally:
        lock.release()


def _evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    started = time.time()
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    method = build_method(cfg)  # the parts first: a config mistake shows before any work
    judge = build_judge(cfg)
    utility_set = build_utility(cfg)
    # The model before the data: a checkpoint that cannot load, has no chat template or
    # cannot encode an image+text batch fails in seconds, before data preparation.
    vlm = load_model(cfg)
    splits = load_data(cfg)
    check_data(method, splits)
    utility_items = utility_set.items()
    log.info(
        "data: %d fit, %d validation, %d evaluation samples",
        len(splits.fit),
        len(splits.validation),
        len(splits.evaluation),
    )

    fit_method(method, vlm, splits.fit, run_dir, splits.validation)
    check_fitted_apart(method, splits.evaluation)
    splits = drop_too_long(cfg, vlm, method, splits)  # as the fitted method asks them
    # Closed in all cases, so a failed job of a multirun leaves no connection behind.
    with open_cache(cfg) as cache:
        generation = generate_answers(cfg, vlm, method, splits.evaluation, cache)
        labels = judge.label(splits.evaluation, generation.responses)
        choices = run_choices(cfg)
        # Before any other judging (validation, baseline): a cascade reports its last call.
        judging = judge_summary(choices.get("judge", type(judge).__name__), labels, judge)
        write_jsonl_atomic(
            run_dir / "responses.jsonl",
            response_rows(splits.evaluation, generation.responses, labels, judge),
        )
        metrics = {
            "run": {
                "model": choices.get("model", vlm.name),
                "method": choices.get("method", type(method).__name__),
                "data": choices.get("data", str(splits.info.get("source", "?"))),
                "judge": choices.get("judge", type(judge).__name__),
                "seed": cfg.seed,
                "model_identity": vlm.identity,
                "method_fingerprint": method.fingerprint(),
                "n_fit": len(splits.fit),
                "n_validation": len(splits.validation),
                "n_evaluation": len(splits.evaluation),
                "objective": OBJECTIVE,  # what calib-run returns to Hydra sweepers
                "generated": generation.generated,  # responses generated by this run
                "cached": generation.cached,  # responses served by the generation cache
            },
            "data": splits.info,
            "method": method_report(method),
            "judge": judging,
            "safety": score(cfg, splits.evaluation, labels),
            # The benchmark authors' aggregation (image-index averages, per-condition SRA).
            "vscbench": vscbench_metrics(splits.evaluation, labels),
            "validation": validation_figures(cfg, vlm, method, judge, splits.validation, cache),
        }
        if utility_items:
            answers = generate_answers(cfg, vlm, method, utility_items, cache)
            utility = score_utility(utility_set, utility_items, answers.responses)
            write_jsonl_atomic(run_dir / "utility_responses.jsonl", utility.rows)
            metrics["utility"] = utility.summary
        metrics["deltas"] = deltas_to_baseline(
            cfg, vlm, method, judge, splits.evaluation, utility_set, utility_items, metrics, cache
        )
        run_plots(metrics, run_dir / "plots", run_dir / "method")
        metrics["run"]["duration_s"] = round(time.time() - started, 2)  # baseline included
        write_text_atomic(run_dir / "report.md", render_report(metrics))
        write_json_atomic(run_dir / "metrics.json", metrics)
        return metrics


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One full run, reported to the configured logger, which is closed whatever happens."""
    check_settings(cfg)  # before the logger records anything
    logger = build_logger(cfg)
    choices = run_choices(cfg)
    logger.start(
        OmegaConf.to_container(cfg, resolve=True),
        run_dir,
        name=run_dir.name,
        tags=[choices.get("model", "model"), choices.get("method", "method")],
    )
    try:
        metrics = evaluate(cfg, run_dir)
        logger.log_summary(flatten(metrics))
        logger.log_table("responses", read_jsonl(run_dir / "responses.jsonl"))
        if (run_dir / "utility_responses.jsonl").is_file():
            logger.log_table("utility", read_jsonl(run_dir / "utility_responses.jsonl"))
        logger.log_images({f"plots/{p.stem}": p for p in sorted(run_dir.glob("plots/*.png"))})
        logger.log_file(run_dir / "method", kind=str(metrics["run"]["method"]))
        return metrics
    finally:
        logger.finish()
