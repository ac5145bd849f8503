"""The Hydra entry point: compose -> fit -> generate -> judge -> score -> report.

Each stage is a plain function that a notebook can call on its own; ``run`` strings
them together in the order of the data's journey (see DESIGN.md).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import call, instantiate
from omegaconf import DictConfig, OmegaConf

from calib.cache import GenerationCache
from calib.errors import ConfigError, DataError
from calib.generate import generate
from calib.io import read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from calib.models import VLM, load_vlm
from calib.types import CalibrationMethod, Judge, Label, Sample
from eval.baseline import Baseline, baseline_scores, deltas, is_baseline, score_utility
from eval.datasets import DataSplits
from eval.metrics import flatten, safety_metrics, vscbench_metrics
from eval.plots import run_plots
from eval.report import render_report, summary_lines
from eval.utility import UtilitySet

log = logging.getLogger("calib.run")


def build(factory: Any, node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate``/``call`` a config node, surfacing the project's own errors unwrapped.

    Hydra wraps what a constructor raises in ``InstantiationException``; a ``ConfigError``
    or ``DataError`` already names the key and the fix, so the user sees it as it is.
    """
    try:
        return factory(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError | DataError):
            raise err.__cause__ from None
        raise


def load_data(cfg: DictConfig) -> DataSplits:
    """The calibration and evaluation splits of the configured benchmark."""
    return build(call, cfg.data)


def load_model(cfg: DictConfig) -> VLM:
    return load_vlm(cfg.model, cache_dir=Path(cfg.paths.cache_dir))


def build_method(cfg: DictConfig) -> CalibrationMethod:
    return build(instantiate, cfg.method, _convert_="all")


def build_judge(cfg: DictConfig) -> Judge:
    return build(instantiate, cfg.judge, _convert_="all")


def build_utility(cfg: DictConfig) -> UtilitySet:
    """The utility set scored beside safety (``utility=none`` has no items: skipped)."""
    return build(instantiate, cfg.utility, _convert_="all")


def fit_method(
    method: CalibrationMethod, vlm: VLM, calibration: Sequence[Sample], run_dir: Path
) -> None:
    workdir = run_dir / "method"
    workdir.mkdir(parents=True, exist_ok=True)
    method.fit(vlm, calibration, workdir)


def decoding_settings(cfg: DictConfig) -> dict[str, Any]:
    gen = cfg.generation
    return {
        "max_new_tokens": gen.max_new_tokens,
        "do_sample": gen.do_sample,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "seed": cfg.seed,
    }


def response_rows(
    samples: Sequence[Sample], responses: Sequence[str], labels: Sequence[Label]
) -> list[dict]:
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
        }
        for s, r, lab in zip(samples, responses, labels, strict=True)
    ]


def score(cfg: DictConfig, samples: Sequence[Sample], labels: Sequence[Label]) -> dict[str, Any]:
    return safety_metrics(
        samples, labels, n_boot=cfg.metrics.n_boot, seed=cfg.seed, confidence=cfg.metrics.confidence
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
        base = baseline_scores(
            vlm,
            judge,
            samples,
            utility_set,
            utility_items,
            batch_size=cfg.generation.batch_size,
            decoding=decoding_settings(cfg),
            cache=cache,
            score_safety=lambda s, lab: safety_metrics(
                s, lab, n_boot=0, seed=cfg.seed, confidence=cfg.metrics.confidence
            ),
        )
    return deltas(metrics["safety"], metrics.get("utility"), base)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One full run, reported to the configured logger, which is closed whatever happens."""
    logger = build(instantiate, cfg.logger, _convert_="all")
    choices = _choices(cfg)
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


def open_cache(cfg: DictConfig) -> AbstractContextManager[GenerationCache | None]:
    """The generation cache shared by runs (``cache.enabled=false``: none)."""
    return GenerationCache.in_dir(cfg.paths.cache_dir) if cfg.cache.enabled else nullcontext()


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The journey; writes responses.jsonl, report.md, config.yaml and (last) metrics.json."""
    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    splits = load_data(cfg)
    method = build_method(cfg)
    judge = build_judge(cfg)
    utility_set = build_utility(cfg)
    utility_items = utility_set.items()
    vlm = load_model(cfg)
    log.info(
        "data: %d calibration, %d evaluation samples",
        len(splits.calibration),
        len(splits.evaluation),
    )

    fit_method(method, vlm, splits.calibration, run_dir)
    # Closed in all cases, so a failed job of a multirun leaves no connection behind.
    with open_cache(cfg) as cache:
        generation = generate(
            vlm,
            method,
            splits.evaluation,
            batch_size=cfg.generation.batch_size,
            decoding=decoding_settings(cfg),
            cache=cache,
        )
        responses = generation.responses
        labels = judge.label(splits.evaluation, responses)
        write_jsonl_atomic(
            run_dir / "responses.jsonl", response_rows(splits.evaluation, responses, labels)
        )

        choices = _choices(cfg)
        metrics = {
            "run": {
                "model": choices.get("model", vlm.name),
                "method": choices.get("method", type(method).__name__),
                "data": choices.get("data", "?"),
                "judge": choices.get("judge", type(judge).__name__),
                "seed": cfg.seed,
                "model_identity": vlm.identity,
                "method_fingerprint": method.fingerprint(),
                "n_calibration": len(splits.calibration),
                "n_evaluation": len(splits.evaluation),
                "generated": generation.generated,  # responses generated by this run
                "cached": generation.cached,  # responses served by the generation cache
            },
            "data": splits.info,
            "judge": {"counts": dict(Counter(label.value for label in labels))},
            "safety": score(cfg, splits.evaluation, labels),
            # The benchmark authors' aggregation (image-index averages, per-condition SRA).
            "vscbench": vscbench_metrics(splits.evaluation, labels),
        }
        if utility_items:
            answers = generate(
                vlm,
                method,
                utility_items,
                batch_size=cfg.generation.batch_size,
                decoding=decoding_settings(cfg),
                cache=cache,
            )
            utility = score_utility(utility_set, utility_items, answers.responses)
            write_jsonl_atomic(run_dir / "utility_responses.jsonl", utility.rows)
            metrics["utility"] = utility.summary
        metrics["deltas"] = deltas_to_baseline(
            cfg, vlm, method, judge, splits.evaluation, utility_set, utility_items, metrics, cache
        )
        run_plots(metrics, run_dir / "plots")
        metrics["run"]["duration_s"] = round(
            time.time() - started, 2
        )  # all stages, baseline included
        write_text_atomic(run_dir / "report.md", render_report(metrics))
        write_json_atomic(run_dir / "metrics.json", metrics)
        return metrics


def _choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each config group was picked (from Hydra, when it is running)."""
    if HydraConfig.initialized():
        return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items()}
    return {}


# An absolute path: as a console script Hydra would otherwise look for a *package* named conf.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """``calib-run``: returns the safety mean so Hydra sweepers (Optuna) can optimise it."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, run_dir)
    except KeyboardInterrupt:
        resume = (
            "finished batches are in the generation cache: re-run the same command to resume "
            "(only missing responses are generated)"
            if cfg.cache.enabled
            else "nothing was kept (cache.enabled=false)"
        )
        print(f"\ninterrupted: {resume}.", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"\n{summary_lines(metrics)}\n\nrun folder: {run_dir}")
    return metrics["safety"]["mean"]


if __name__ == "__main__":
    main()
