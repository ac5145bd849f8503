"""What a safety benchmark loader returns: the calibration and evaluation splits.

Every ``conf/data/*.yaml`` points (``_target_``) at a loader that returns a ``DataSplits``;
the run calls it with ``hydra.utils.call(cfg.data)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from calib.errors import ConfigError
from calib.types import Sample
from eval.data.splits import grouped_split, stratified_limit, summarise


@dataclass
class DataSplits:
    """The two splits of one benchmark and a JSON-able description of them.

    Attributes:
        calibration: what methods that learn may see (demonstrations, LoRA targets, vectors).
        evaluation: what is generated, judged and scored; shares no group with calibration.
        info: source, settings, split sizes per label/condition/category, dropped samples;
            the run writes it into ``metrics.json`` under ``data``.
    """

    calibration: list[Sample]
    evaluation: list[Sample]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> list[Sample]:
        return [*self.calibration, *self.evaluation]


def split_problems(calibration_fraction: float, limit: int | None) -> list[str]:
    """Config problems with the split settings, each naming its key and the fix."""
    problems = []
    if not 0 <= calibration_fraction < 1:
        problems.append(
            f"data.calibration_fraction={calibration_fraction} must be in [0, 1) "
            "(0 = no calibration split; 0.2 = a fifth of the groups)"
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        problems.append(f"data.limit={limit} must be null (all samples) or an integer >= 2")
    return problems


def make_splits(
    samples: Sequence[Sample],
    *,
    calibration_fraction: float,
    seed: int,
    limit: int | None,
    info: dict[str, Any],
) -> DataSplits:
    """Apply ``limit`` (stratified), split by group (stratified), and describe the result.

    Args:
        samples: every usable sample, groups already linked (see ``eval.data.splits.link_groups``).
        calibration_fraction: target share of samples in the calibration split.
        seed: seeds the limit draw and the split.
        limit: keep this many samples in all (null: all).
        info: loader facts (source, dropped counts...) merged into ``DataSplits.info``.
    """
    problems = split_problems(calibration_fraction, limit)
    if problems:
        raise ConfigError(problems)
    kept = stratified_limit(samples, limit, seed)
    calibration, evaluation = grouped_split(kept, calibration_fraction, seed)
    if not evaluation:
        raise ConfigError(
            f"data.calibration_fraction={calibration_fraction} left no evaluation samples "
            f"out of {len(kept)}: lower it or raise data.limit"
        )
    return DataSplits(
        calibration=calibration,
        evaluation=evaluation,
        info={
            **info,
            "calibration_fraction": calibration_fraction,
            "seed": seed,
            "limit": limit,
            "calibration": summarise(calibration),
            "evaluation": summarise(evaluation),
        },
    )
