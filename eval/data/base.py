"""What a safety benchmark loader returns: fit, validation and evaluation splits.

Every ``conf/data/*.yaml`` points (``_target_``) at a loader that returns a ``DataSplits``;
the run calls it with ``hydra.utils.call(cfg.data)``. Three parts, none sharing a query
group (a prompt text or a safe/unsafe twin) with another:

- **fit**: what methods learn from (demonstrations, LoRA targets, steering vectors);
- **validation**: what a method or a sweep *selects* on (a layer, a threshold, α, k, a
  preset); every run scores it, and ``calib-run`` returns its mean to Hydra sweepers;
- **evaluation**: what is reported, never optimised.

``calibration`` (fit + validation) is ``data.calibration_fraction`` of the samples;
validation is ``data.validation_fraction`` of the calibration part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calib.errors import ConfigError
from calib.types import Sample
from eval.data.splits import grouped_split, stratified_limit, summarise


@dataclass
class DataSplits:
    """The three parts of one benchmark and a JSON-able description of them.

    Attributes:
        fit: what methods learn from.
        validation: what methods and sweeps select on (scored by every run).
        evaluation: what is generated, judged and reported.
        info: source, settings, sizes per label/condition/category, dropped samples; the
            run writes it into ``metrics.json`` under ``data``.
    """

    fit: list[Sample]
    validation: list[Sample]
    evaluation: list[Sample]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def calibration(self) -> list[Sample]:
        """Fit and validation together: everything a method may see."""
        return [*self.fit, *self.validation]

    @property
    def samples(self) -> list[Sample]:
        return [*self.fit, *self.validation, *self.evaluation]


def split_problems(
    calibration_fraction: float, validation_fraction: float, limit: int | None
) -> list[str]:
    """Config problems with the split settings, each naming its key and the fix."""
    problems = []
    for key, value in (
        ("calibration_fraction", calibration_fraction),
        ("validation_fraction", validation_fraction),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            problems.append(
                f"data.{key}={value!r} must be a number in [0, 1) "
                + (
                    "(0 = no calibration split; 0.2 = a fifth of the query groups)"
                    if key == "calibration_fraction"
                    else "(the share of the calibration split held out to select on; 0 = none)"
                )
            )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        problems.append(f"data.limit={limit!r} must be null (all samples) or an integer >= 2")
    return problems


def rendered_info(
    source: str, image_dir: Path, conditions: Sequence[str], samples: Sequence[Sample]
) -> dict[str, Any]:
    """``DataSplits.info`` of a benchmark the project renders itself (sample, organism)."""
    return {
        "source": source,
        "image_dir": str(image_dir.resolve()),
        "conditions": list(conditions),
        "total": len(samples),
    }


def make_splits(
    samples: Sequence[Sample],
    *,
    calibration_fraction: float,
    validation_fraction: float,
    seed: int,
    limit: int | None,
    info: dict[str, Any],
) -> DataSplits:
    """Apply ``limit`` (stratified), split by group (stratified) three ways, describe it.

    Args:
        samples: every usable sample, groups already linked (see ``eval.data.splits.link_groups``).
        calibration_fraction: target share of samples in fit + validation.
        validation_fraction: target share of the calibration samples held out as validation.
        seed: seeds the limit draw and both splits.
        limit: keep this many samples in all (null: all).
        info: loader facts (source, dropped counts...) merged into ``DataSplits.info``.
    """
    problems = split_problems(calibration_fraction, validation_fraction, limit)
    if problems:
        raise ConfigError(problems)
    kept = stratified_limit(samples, limit, seed)
    calibration, evaluation = grouped_split(kept, calibration_fraction, seed)
    if not evaluation:
        raise ConfigError(
            f"data.calibration_fraction={calibration_fraction} left no evaluation samples "
            f"out of {len(kept)}: lower it or raise data.limit"
        )
    validation, fit = grouped_split(calibration, validation_fraction, seed + 1)
    return DataSplits(
        fit=fit,
        validation=validation,
        evaluation=evaluation,
        info={
            **info,
            "calibration_fraction": calibration_fraction,
            "validation_fraction": validation_fraction,
            "seed": seed,
            "limit": limit,
            "fit": summarise(fit),
            "validation": summarise(validation),
            "evaluation": summarise(evaluation),
        },
    )
