"""The embedded sample benchmark (``data=sample``): small, written for the project, no download.

It has VSCBench's two shapes (see ``eval/data/sample_bench.yaml``): image-centric items (one query,
a safe and an unsafe picture) and text-centric pairs (a safe query and its unsafe look-alike)
in the conditions ``txt``, ``typography`` and ``figstep``. Pictures are rendered with
``eval.data.render`` into ``<cache_dir>/sample_images/`` on first use (and rewritten only when
their bytes would change).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from calib.errors import ConfigError, DataError
from calib.types import Sample
from eval.data.base import DataSplits, make_splits, rendered_info
from eval.data.render import (
    FIGSTEP_INSTRUCTION,
    IMAGE_REFERENCE,
    render_figstep,
    render_scene_card,
    render_typography,
    save_png,
)
from eval.data.splits import link_groups, normalise_text

CONDITIONS = ("image", "txt", "typography", "figstep")
LABELS = ("safe", "unsafe")
_FIGSTEP_KEY = normalise_text(FIGSTEP_INSTRUCTION)


@cache
def sample_items() -> dict[str, list[dict[str, Any]]]:
    """The embedded items, as written in ``eval/data/sample_bench.yaml`` (checked)."""
    text = resources.files("eval.data").joinpath("sample_bench.yaml").read_text(encoding="utf-8")
    items = yaml.safe_load(text)
    for pair in items["text_centric"]:
        for label in LABELS:
            side = pair[label]
            if side["object"] not in side["query"]:
                raise DataError(
                    f"eval/data/sample_bench.yaml: text item {pair['id']!r} ({label}): object "
                    f"{side['object']!r} does not occur in its query {side['query']!r}"
                )
    return items


def masked_query(query: str, key_object: str) -> str:
    """The query with its key object replaced by "the content in the image"."""
    return query.replace(key_object, IMAGE_REFERENCE, 1)


def _image_centric(image_dir: Path, size: int) -> list[Sample]:
    samples = []
    for row, item in enumerate(sample_items()["image_centric"]):
        for label in LABELS:
            path = image_dir / "image" / f"{item['id']}_{label}.png"
            save_png(render_scene_card(item[label], size=size), path)
            samples.append(
                Sample(
                    id=f"sample/image/{item['id']}/{label}",
                    prompt=item["query"],
                    image=str(path),
                    label=label,
                    category=item["category"],
                    condition="image",
                    group=f"sample/image/{item['id']}",
                    meta={
                        "half": "image_centric",
                        "image_index": 0,
                        "row": row,
                        "scene": item[label],
                        "family": item["category"],
                        "query": item["query"],
                    },
                )
            )
    return samples


def _text_centric(image_dir: Path, size: int, conditions: set[str]) -> list[Sample]:
    samples = []
    for row, pair in enumerate(sample_items()["text_centric"]):
        for label in LABELS:
            side = pair[label]
            stem = f"{pair['id']}_{label}"
            inputs: dict[str, tuple[str, Path | None]] = {}
            if "txt" in conditions:
                inputs["txt"] = (side["query"], None)
            if "typography" in conditions:
                path = image_dir / "typography" / f"{stem}.png"
                save_png(render_typography(side["object"], size, size), path)
                inputs["typography"] = (masked_query(side["query"], side["object"]), path)
            if "figstep" in conditions:
                path = image_dir / "figstep" / f"{stem}.png"
                save_png(render_figstep(side["statement"], size), path)
                inputs["figstep"] = (FIGSTEP_INSTRUCTION, path)
            for condition, (prompt, path) in inputs.items():
                samples.append(
                    Sample(
                        id=f"sample/text/{pair['id']}/{label}/{condition}",
                        prompt=prompt,
                        image=None if path is None else str(path),
                        label=label,
                        category=pair["category"],
                        condition=condition,
                        group=f"sample/text/{pair['id']}",
                        meta={
                            "half": "text_centric",
                            "row": row,
                            "type": side["type"],
                            "object": side["object"],
                            "statement": side["statement"],
                            "family": pair["category"],
                            "query": side["query"],
                        },
                    )
                )
    return samples


def sample_samples(cache_dir: str | Path, conditions: list[str], image_size: int) -> list[Sample]:
    """Every sample of the embedded set in ``conditions``, its pictures rendered if needed."""
    image_dir = (Path(cache_dir) / "sample_images").resolve()
    selected = set(conditions)
    samples = _image_centric(image_dir, image_size) if "image" in selected else []
    samples += _text_centric(image_dir, image_size, selected)

    def link_keys(sample: Sample) -> list[str]:
        key = normalise_text(sample.prompt)
        return [f"prompt:{key}"] if key and key != _FIGSTEP_KEY else []

    return link_groups(samples, link_keys)


def load_sample(
    cache_dir: str,
    conditions: list[str],
    image_size: int,
    calibration_fraction: float,
    validation_fraction: float,
    seed: int,
    limit: int | None,
) -> DataSplits:
    """The embedded sample benchmark, split into fit, validation and evaluation (conf/data)."""
    problems = []
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown or not conditions:
        problems.append(
            f"data.conditions={list(conditions)}: choose a non-empty subset of {list(CONDITIONS)}"
        )
    if not isinstance(image_size, int) or image_size < 32:
        problems.append(f"data.image_size={image_size} must be an integer >= 32 (pixels)")
    if problems:
        raise ConfigError(problems)
    samples = sample_samples(cache_dir, list(conditions), image_size)
    return make_splits(
        samples,
        calibration_fraction=calibration_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
        limit=limit,
        info=rendered_info("sample", Path(cache_dir) / "sample_images", conditions, samples),
    )
