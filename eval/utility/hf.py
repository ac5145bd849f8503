"""Utility benchmarks from the Hugging Face hub (or a local ``datasets`` folder).

One class covers the three answer forms; the YAML preset maps the dataset's columns onto
the fields it needs (``conf/utility/{mmbench,scienceqa_img,mme,mmvet}.yaml``):

- ``multiple_choice`` (MMBench, ScienceQA-IMG): options come from one list column
  (``fields.choices``) or from one column per letter (``fields.options: [A, B, C, D]``);
  they are printed under the question as "A. ..." lines, and the reference is a letter
  (``answer_format: letter``), a 0-based index (``index``) or the option's text (``text``).
- ``yes_no`` (MME): the reference is "yes" or "no" (any case).
- ``open`` (MM-Vet): free text, graded by ``grader`` (an LLM, :mod:`eval.utility.grader`).

Images are saved once as PNG under ``<cache_dir>/utility_images/<name>-<hash>/`` so that
samples carry paths, as everywhere else in the project.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from calib.errors import ConfigError, DataError
from calib.types import Grader, Sample
from eval.data.render import save_png
from eval.utility.parse import LETTERS

TASKS = ("multiple_choice", "yes_no", "open")
ANSWER_FORMATS = ("letter", "index", "text")
FIELD_KEYS = ("id", "question", "image", "answer", "category", "hint", "choices", "options")


def load_table(
    path: str, subset: str | None, split: str, revision: str | None, hf_cache_dir: str | None = None
) -> Any:
    """A ``datasets.Dataset``: ``load_from_disk`` for a saved folder, else ``load_dataset``."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    folder = Path(path)
    try:
        if folder.is_dir() and any(
            (folder / f).is_file() for f in ("state.json", "dataset_dict.json")
        ):
            table = load_from_disk(str(folder))
            return table[split] if isinstance(table, DatasetDict) else table
        return load_dataset(path, subset, split=split, revision=revision, cache_dir=hf_cache_dir)
    except Exception as err:
        raise DataError(
            f"utility.path={path} (subset={subset}, split={split}) could not be loaded: {err}. "
            "Give a hub id (with network, HF_HUB_OFFLINE unset) or a local dataset folder, "
            "or use utility=sample"
        ) from err


def _image(value: Any) -> Image.Image | str:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, Mapping) and value.get("bytes"):
        return Image.open(io.BytesIO(value["bytes"]))
    if isinstance(value, Mapping) and value.get("path"):
        return str(value["path"])
    if isinstance(value, str) and Path(value).is_file():
        return value
    raise DataError(
        f"utility image value of type {type(value).__name__} is neither an image nor a file"
    )


def _blank(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and value != value)
        or str(value).strip() in ("", "nan")
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


class HFUtility:
    """A utility benchmark read with ``datasets`` and mapped by ``fields``."""

    def __init__(
        self,
        name: str,
        path: str,
        subset: str | None,
        split: str,
        revision: str | None,
        task: str,
        fields: Mapping[str, Any],
        prompt_suffix: str,
        limit: int | None,
        seed: int,
        cache_dir: str,
        hf_cache_dir: str | None = None,
        grader: Grader | None = None,
        answer_format: str | None = None,
    ):
        problems = []
        if task not in TASKS:
            problems.append(f"utility.task={task} is not one of {TASKS}")
        if task == "multiple_choice" and answer_format not in ANSWER_FORMATS:
            problems.append(
                f"utility.answer_format={answer_format} is not one of {ANSWER_FORMATS} "
                "(how the answer column names the right option)"
            )
        elif task != "multiple_choice" and answer_format is not None:
            problems.append(
                f"utility.answer_format={answer_format} applies to multiple_choice only: "
                f"remove it for utility.task={task}"
            )
        unknown = sorted(set(fields) - set(FIELD_KEYS))
        if unknown:
            problems.append(f"utility.fields has unknown keys {unknown}; known: {FIELD_KEYS}")
        for key in ("question", "image", "answer"):
            if not fields.get(key):
                problems.append(
                    f"utility.fields.{key} must name the dataset column holding the {key}"
                )
        if task == "multiple_choice" and not (fields.get("choices") or fields.get("options")):
            problems.append(
                "utility.task=multiple_choice needs utility.fields.choices (a list column) "
                "or utility.fields.options (one column per letter, e.g. [A, B, C, D])"
            )
        if task == "open" and grader is None:
            problems.append(
                "utility.task=open needs utility.grader "
                "(an LLM grader; see conf/utility/mmvet.yaml)"
            )
        if limit is not None and limit < 1:
            problems.append(f"utility.limit={limit} must be a positive number or null (all rows)")
        if problems:
            raise ConfigError(problems)
        self.name, self.task, self.grader = name, task, grader
        self.path, self.subset, self.split, self.revision = path, subset, split, revision
        self.fields, self.answer_format = dict(fields), answer_format
        self.prompt_suffix, self.limit, self.seed = prompt_suffix, limit, seed
        self.hf_cache_dir = hf_cache_dir
        source = f"{path}|{subset}|{split}|{revision}"
        digest = hashlib.sha256(source.encode()).hexdigest()[:8]
        self.image_dir = Path(cache_dir) / "utility_images" / f"{_slug(name)}-{digest}"

    def _check_columns(self, columns: Sequence[str]) -> None:
        wanted = [(k, v) for k, v in self.fields.items() if v and k != "options"]
        wanted += [("options", c) for c in self.fields.get("options") or []]
        missing = [f"utility.fields.{k}={v}" for k, v in wanted if v not in columns]
        if missing:
            raise ConfigError(
                [f"{m} is not a column of {self.path} (columns: {list(columns)})" for m in missing]
            )

    def _rows(self) -> list[tuple[int, dict[str, Any]]]:
        table = load_table(self.path, self.subset, self.split, self.revision, self.hf_cache_dir)
        self._check_columns(table.column_names)
        indices = list(range(len(table)))
        if self.limit is not None and len(indices) > self.limit:
            indices = sorted(random.Random(self.seed).sample(indices, self.limit))
        return [(i, table[i]) for i in indices]

    def _options(self, row: Mapping[str, Any]) -> list[str]:
        if self.fields.get("choices"):
            return [str(c) for c in row[self.fields["choices"]]]
        return [str(row[c]) for c in self.fields["options"] if not _blank(row[c])]

    def _reference(self, row: Mapping[str, Any], options: list[str], where: str) -> str:
        answer = row[self.fields["answer"]]
        if self.task == "yes_no":
            value = str(answer).strip().lower()
            if value not in ("yes", "no"):
                raise DataError(f"{where}: answer {answer!r} is not yes/no (utility.fields.answer)")
            return value
        if self.task == "open":
            return str(answer)
        if self.answer_format == "index":
            letter = LETTERS[int(answer)] if 0 <= int(answer) < len(options) else None
        elif self.answer_format == "text":
            letter = LETTERS[options.index(str(answer))] if str(answer) in options else None
        else:
            letter = str(answer).strip().upper()
            letter = letter if letter in LETTERS[: len(options)] else None
        if letter is None:
            raise DataError(
                f"{where}: answer {answer!r} does not pick one of {len(options)} options "
                f"(utility.answer_format={self.answer_format})"
            )
        return letter

    def _prompt(self, row: Mapping[str, Any], options: list[str]) -> str:
        parts = []
        hint = row[self.fields["hint"]] if self.fields.get("hint") else None
        if not _blank(hint):
            parts.append(f"Hint: {hint}")
        parts.append(str(row[self.fields["question"]]).strip())
        parts += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
        if self.prompt_suffix:
            parts.append(self.prompt_suffix)
        return "\n".join(parts)

    def _image_path(self, value: Any, key: str) -> str | None:
        if value is None:
            return None  # a text-only question
        image = _image(value)
        if isinstance(image, str):
            return image
        path = self.image_dir / f"{_slug(key)}.png"
        if not path.is_file():
            save_png(image.convert("RGB"), path)
        return str(path)

    def items(self) -> list[Sample]:
        samples = []
        for index, row in self._rows():
            key = str(row[self.fields["id"]]) if self.fields.get("id") else str(index)
            where = f"{self.path} row {index} (id {key})"
            options = self._options(row) if self.task == "multiple_choice" else []
            category = row[self.fields["category"]] if self.fields.get("category") else self.name
            if isinstance(category, (list, tuple)):
                category = "+".join(str(c) for c in category)
            meta: dict[str, Any] = {"set": self.name, "row": index, "source_id": key}
            if options:
                meta["options"] = options
            samples.append(
                Sample(
                    id=f"utility/{self.name}/{index}",  # row number: ids may repeat (MME)
                    prompt=self._prompt(row, options),
                    image=self._image_path(row[self.fields["image"]], key),
                    label=None,
                    category=str(category),
                    condition=self.task,
                    group=f"utility/{self.name}/{key}",
                    reference=self._reference(row, options, where),
                    meta=meta,
                )
            )
        return samples
