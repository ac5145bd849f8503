"""VSCBench (Geng, Li et al., Findings of ACL 2025): its two spreadsheets and image folders.

Layout under ``data.root`` (the authors' archive, with their two spreadsheets beside it)::

    vscbench_image_centric.xlsx        300 rows: Category, Prompt, safe_img_0..2, unsafe_img_0..2
    vscbench_text_centric.xlsx         450 rows: type, focus, prompt_origin, prompt_mm, object,
                                       search_img, typography_img, concat_img, prompt_figstep,
                                       figstep_img
    vscbench_image_centric_images/<Category>/<file>
    vscbench_text_centric_images/{search,typography,concat,figstep}/<file>

Image-centric: each row is one query with 3 safe and 3 unsafe images (condition ``image``;
``meta["image_index"]`` keeps the index, over which the authors average). Text-centric: a row
is unsafe when its ``type`` contains ``contrast``; conditions ``txt`` (prompt_origin, no image),
``search``/``typography``/``concat`` (that image + prompt_mm) and ``figstep`` (FigStep image +
the fixed FigStep instruction).

Quirks of the spreadsheets, kept as they are: two image-centric rows have no prompt (their
samples get an empty prompt: the model sees only the image; ``info["empty_prompts"]`` counts
them); prompts may carry stray spaces (stripped); one row names the same safe image twice.

Groups (no group is on both sides of a split) join, with a union-find: the samples of one row;
rows whose prompts (any of a row's texts) are equal once normalised; rows sharing an image
file; and safe/contrast twins (``eval.data.vscbench_twins``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pandas as pd

from calib.errors import ConfigError, DataError
from calib.types import Sample
from eval.data.base import DataSplits, make_splits, split_problems
from eval.data.image_check import check_images
from eval.data.render import FIGSTEP_INSTRUCTION, render_placeholder
from eval.data.splits import link_groups, normalise_text
from eval.data.vscbench_twins import text_twin_keys

IMAGE_CENTRIC_XLSX = "vscbench_image_centric.xlsx"
TEXT_CENTRIC_XLSX = "vscbench_text_centric.xlsx"
IMAGE_CENTRIC_DIR = "vscbench_image_centric_images"
TEXT_CENTRIC_DIR = "vscbench_text_centric_images"
HALVES = ("image_centric", "text_centric")
TEXT_IMAGE_CONDITIONS = ("search", "typography", "concat", "figstep")
CONDITIONS = ("image", "txt", *TEXT_IMAGE_CONDITIONS)
ON_MISSING = ("error", "skip")
IMAGE_COLUMNS = [f"{label}_img_{k}" for label in ("safe", "unsafe") for k in range(3)]
IMAGE_CENTRIC_COLUMNS = ["Category", "Prompt", *IMAGE_COLUMNS]
TEXT_CENTRIC_COLUMNS = [
    "type",
    "focus",
    "prompt_origin",
    "prompt_mm",
    "object",
    *(f"{c}_img" for c in TEXT_IMAGE_CONDITIONS),
    "prompt_figstep",
]


def read_sheet(path: Path, columns: Sequence[str], key: str) -> pd.DataFrame:
    """A spreadsheet as strings ("" for empty cells), after checking its columns."""
    if not path.is_file():
        raise DataError(f"{key}: {path} does not exist")
    stat = path.stat()
    try:
        frame = _read_excel(str(path), stat.st_mtime_ns, stat.st_size).copy()
    except Exception as error:
        raise DataError(f"{key}: cannot read {path} as a spreadsheet: {error}") from error
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(
            f"{key}: {path} lacks the column(s) {absent}; found {list(frame.columns)}. "
            "Is this VSCBench's spreadsheet?"
        )
    filled = frame.empty or (frame[list(columns)].map(lambda v: str(v).strip()) != "").to_numpy()
    if frame.empty or not filled.any():
        raise DataError(
            f"{key}: {path} has the header but no rows: is it the full download, or a file "
            "saved after its rows were deleted? Download VSCBench's spreadsheet again (see "
            "README) or point the key at the complete file"
        )
    return frame


@lru_cache(maxsize=8)
def _read_excel(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """Read once per process and file version (sweeps load the benchmark once per job)."""
    return pd.read_excel(path, dtype=str, keep_default_na=False).fillna("")


def read_image_centric(path: Path, key: str = "data.image_centric_xlsx") -> pd.DataFrame:
    return read_sheet(path, IMAGE_CENTRIC_COLUMNS, key)


def read_text_centric(path: Path, key: str = "data.text_centric_xlsx") -> pd.DataFrame:
    return read_sheet(path, TEXT_CENTRIC_COLUMNS, key)


def text_label(row_type: str) -> str:
    """VSCBench's rule: a text-centric row is unsafe when its type contains "contrast"."""
    return "unsafe" if "contrast" in row_type else "safe"


#: XSTest's safe types whose contrast (unsafe) type has another name.
_FAMILY_OF = {
    "nons_group_real_discr": "discr",
    "real_group_nons_discr": "discr",
    "privacy_public": "privacy",
    "privacy_fictional": "privacy",
}


def type_family(row_type: str) -> str:
    """The label-free family of an XSTest type: ``homonyms`` for both ``homonyms`` and
    ``contrast_homonyms``. The type itself encodes the label; its family does not, so
    methods that match queries by topic (few-shot ``same_category``) use the family."""
    base = row_type.removeprefix("contrast_")
    return _FAMILY_OF.get(base, base)


def image_centric_samples(frame: pd.DataFrame, root: Path) -> list[Sample]:
    """Six samples per row (3 safe, 3 unsafe images), condition ``image``."""
    samples = []
    for row, record in enumerate(frame.to_dict("records")):
        category = record["Category"].strip()
        for column in IMAGE_COLUMNS:
            label, _, index = column.partition("_img_")
            name = record[column].strip()
            samples.append(
                Sample(
                    id=f"vscbench/image/r{row:03d}/{label}/{index}",
                    prompt=record["Prompt"].strip(),
                    image=str(root / IMAGE_CENTRIC_DIR / category / name),
                    label=label,
                    category=category,
                    condition="image",
                    group=f"vscbench/image/r{row:03d}",
                    meta={
                        "half": "image_centric",
                        "image_index": int(index),
                        "row": row,
                        "file": f"{category}/{name}",
                        "family": category,  # the same for the safe and the unsafe images
                        "query": record["Prompt"].strip(),  # what the judge is shown
                    },
                )
            )
    return samples


def text_centric_samples(frame: pd.DataFrame, root: Path) -> list[Sample]:
    """Five samples per row: txt, search, typography, concat, figstep."""
    samples = []
    for row, record in enumerate(frame.to_dict("records")):
        row_type = record["type"].strip()
        meta = {
            "half": "text_centric",
            "row": row,
            "type": row_type,
            "focus": record["focus"].strip() or None,
            "object": record["object"].strip(),
            "statement": record["prompt_figstep"].strip(),
            "family": type_family(row_type),
            # The authors' judge sees the original text query in every condition: the
            # multimodal prompts ("the content in the image", FigStep's instruction) do
            # not say what was asked.
            "query": record["prompt_origin"].strip(),
        }
        inputs: dict[str, tuple[str, str | None]] = {"txt": (record["prompt_origin"], None)}
        for condition in TEXT_IMAGE_CONDITIONS:
            name = record[f"{condition}_img"].strip()
            prompt = FIGSTEP_INSTRUCTION if condition == "figstep" else record["prompt_mm"]
            inputs[condition] = (prompt, str(root / TEXT_CENTRIC_DIR / condition / name))
        for condition, (prompt, image) in inputs.items():
            samples.append(
                Sample(
                    id=f"vscbench/text/r{row:03d}/{condition}",
                    prompt=prompt.strip(),
                    image=image,
                    label=text_label(row_type),
                    category=row_type,
                    condition=condition,
                    group=f"vscbench/text/r{row:03d}",
                    meta=dict(meta),
                )
            )
    return samples


def _row_link_keys(image_frame: pd.DataFrame | None, text_frame: pd.DataFrame | None):
    """Per group: the keys that tie it to other rows (texts, image files, twins)."""
    keys: dict[str, list[str]] = {}

    def prompt_key(text: str) -> list[str]:
        norm = normalise_text(text)
        return [f"prompt:{norm}"] if norm else []

    if image_frame is not None:
        for row, record in enumerate(image_frame.to_dict("records")):
            files = [f"file:image/{record['Category'].strip()}/{record[c]}" for c in IMAGE_COLUMNS]
            keys[f"vscbench/image/r{row:03d}"] = prompt_key(record["Prompt"]) + files
    if text_frame is not None:
        twins = text_twin_keys(text_frame)
        for row, record in enumerate(text_frame.to_dict("records")):
            texts = [record[c] for c in ("prompt_origin", "prompt_mm", "prompt_figstep")]
            files = [f"file:{c}/{record[f'{c}_img']}" for c in TEXT_IMAGE_CONDITIONS]
            keys[f"vscbench/text/r{row:03d}"] = [
                *(k for t in texts for k in prompt_key(t)),
                *files,
                *twins[row],
            ]
    return keys


def vscbench_samples(
    root: Path, image_frame: pd.DataFrame | None, text_frame: pd.DataFrame | None
) -> list[Sample]:
    """Every sample of the given halves, with groups linked across both halves."""
    samples = []
    if image_frame is not None:
        samples += image_centric_samples(image_frame, root)
    if text_frame is not None:
        samples += text_centric_samples(text_frame, root)
    keys = _row_link_keys(image_frame, text_frame)
    return link_groups(samples, lambda s: keys[s.group])


SHEETS = {  # half -> (file name, config key of its explicit path)
    "image_centric": (IMAGE_CENTRIC_XLSX, "image_centric_xlsx"),
    "text_centric": (TEXT_CENTRIC_XLSX, "text_centric_xlsx"),
}
NO_DATA_HINT = "download the VSCBench archive (see README) and unpack it there, or set data=sample"


def sheet_path(root: str | None, explicit: str | None, half: str) -> tuple[Path | None, str]:
    """Where a half's spreadsheet should be, and the config setting that says so."""
    name, key = SHEETS[half]
    if explicit is not None:
        return Path(explicit).expanduser().resolve(), f"data.{key}={explicit}"
    if root is None:
        return None, f"data.{key}"
    return Path(root).expanduser().resolve() / name, f"data.root={root}"


def source_problems(
    root: str | None,
    sheets: dict[str, str | None],
    halves: Sequence[str],
    conditions: Sequence[str],
) -> list[str]:
    """What the selection needs but is not there: the root, spreadsheets, image folders.

    Args:
        sheets: half -> explicit spreadsheet path (``data.<half>_xlsx``) or None.
    """
    needed = []
    if "image_centric" in halves and "image" in conditions:
        needed.append(IMAGE_CENTRIC_DIR)
    if "text_centric" in halves and set(conditions) & set(TEXT_IMAGE_CONDITIONS):
        needed.append(TEXT_CENTRIC_DIR)
    selected = [h for h in HALVES if h in halves]
    problems = []
    if root is None:
        wanting = [SHEETS[h][0] for h in selected if sheets[h] is None] + needed
        if wanting:
            problems.append(
                f"data.root is not set but {wanting} are needed: set data.root=<folder with "
                "the VSCBench spreadsheets and image folders> (text only: data.conditions=[txt] "
                "and data.text_centric_xlsx=<path>), or set data=sample"
            )
    elif not Path(root).expanduser().is_dir():
        return [f"data.root={root} does not exist or is not a folder — {NO_DATA_HINT}"]
    for half in selected:
        name, key = SHEETS[half]
        path, setting = sheet_path(root, sheets[half], half)
        if path is not None and not path.is_file():
            where = "does not exist" if sheets[half] is not None else f"has no {name}"
            problems.append(
                f"{setting} {where} — the spreadsheets come from github.com/jiahuigeng/VSCBench; "
                f"put {name} in data.root or set data.{key}=<its path>; or set data=sample"
            )
    if root is not None:
        base = Path(root).expanduser()
        problems += [
            f"data.root={root} has no {folder}/ folder — {NO_DATA_HINT}"
            for folder in needed
            if not (base / folder).is_dir()
        ]
    return list(dict.fromkeys(problems))


def _selection_problems(
    halves: Sequence[str], conditions: Sequence[str], on_missing: str
) -> list[str]:
    problems = []
    if not halves or set(halves) - set(HALVES):
        problems.append(f"data.halves={list(halves)}: choose a non-empty subset of {list(HALVES)}")
    if not conditions or set(conditions) - set(CONDITIONS):
        problems.append(
            f"data.conditions={list(conditions)}: choose a non-empty subset of {list(CONDITIONS)}"
        )
    if on_missing not in ON_MISSING:
        problems.append(f"data.on_missing={on_missing}: choose one of {list(ON_MISSING)}")
    return problems


def select(
    samples: Sequence[Sample], conditions: Sequence[str], categories: Sequence[str] | None
) -> list[Sample]:
    """The samples in ``conditions`` and (unless None) ``categories``; unknown names raise."""
    if categories is not None:
        known = sorted({s.category for s in samples})
        unknown = sorted(set(categories) - set(known))
        if unknown:
            raise ConfigError(
                f"data.categories: unknown {unknown}; known (image-centric categories and "
                f"text-centric types): {known}"
            )
    wanted = None if categories is None else set(categories)
    chosen = [
        s for s in samples if s.condition in conditions and (wanted is None or s.category in wanted)
    ]
    if not chosen:
        raise ConfigError(
            f"data.categories={categories} with data.conditions={list(conditions)} "
            "select no samples"
        )
    return chosen


def load_frames(
    root: str | None,
    image_centric_xlsx: str | None,
    text_centric_xlsx: str | None,
    halves: Sequence[str],
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The spreadsheets of the selected halves (None for a half not selected)."""
    explicit = {"image_centric": image_centric_xlsx, "text_centric": text_centric_xlsx}
    problems = source_problems(root, explicit, halves, conditions=())
    if problems:
        raise ConfigError(problems)
    frames: dict[str, pd.DataFrame | None] = dict.fromkeys(HALVES)
    readers = {"image_centric": read_image_centric, "text_centric": read_text_centric}
    for half in (h for h in HALVES if h in halves):
        path, setting = sheet_path(root, explicit[half], half)
        frames[half] = readers[half](path, setting)
    return frames["image_centric"], frames["text_centric"]


def load_vscbench(
    root: str | None,
    image_centric_xlsx: str | None,
    text_centric_xlsx: str | None,
    halves: Sequence[str],
    conditions: Sequence[str],
    categories: Sequence[str] | None,
    on_missing: str,
    calibration_fraction: float,
    validation_fraction: float,
    seed: int,
    limit: int | None,
) -> DataSplits:
    """VSCBench, filtered, checked and split into fit, validation and evaluation (conf/data)."""
    halves, conditions = list(halves), list(conditions)
    categories = None if categories is None else list(categories)
    explicit = {"image_centric": image_centric_xlsx, "text_centric": text_centric_xlsx}
    problems = _selection_problems(halves, conditions, on_missing)
    problems += split_problems(calibration_fraction, validation_fraction, limit)
    if not problems:
        problems += source_problems(root, explicit, halves, conditions)
    if problems:
        raise ConfigError(problems)
    image_frame, text_frame = load_frames(root, image_centric_xlsx, text_centric_xlsx, halves)
    base = Path(root).expanduser().resolve() if root is not None else Path.cwd()
    samples = select(vscbench_samples(base, image_frame, text_frame), conditions, categories)

    # Decoded in full: a picture that passes the quick check but cannot be decoded would stop
    # the run mid-generation.
    report = check_images((s.image for s in samples if s.image is not None), full=True)
    bad = set(report.bad)
    if bad and on_missing == "error":
        raise DataError(
            f"{len(report.missing)} VSCBench image(s) missing and {len(report.unreadable)} "
            f"unreadable under data.root={root}, e.g.:\n  "
            + "\n  ".join(report.bad_lines())
            + f"\nRun `calib-data check data.root={root}` for a full report, or set "
            "data.on_missing=skip to drop these samples."
        )
    usable = [s for s in samples if s.image not in bad]
    return make_splits(
        usable,
        calibration_fraction=calibration_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
        limit=limit,
        info={
            "source": "vscbench",
            "root": None if root is None else str(base),
            "halves": halves,
            "conditions": conditions,
            "categories": categories,
            "total": len(samples),
            "empty_prompts": sum(1 for s in samples if not s.prompt),
            "dropped": {
                "samples": len(samples) - len(usable),
                "missing_images": len(report.missing),
                "unreadable_images": len(report.unreadable),
                "examples": report.bad_lines(),
            },
        },
    )


def expected_images(
    root: Path,
    image_frame: pd.DataFrame | None,
    text_frame: pd.DataFrame | None,
    conditions: Sequence[str] = CONDITIONS,
    categories: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """The image paths the spreadsheets name, per folder (relative to root), in sheet order."""
    samples = []
    if image_frame is not None:
        samples += image_centric_samples(image_frame, root)
    if text_frame is not None:
        samples += text_centric_samples(text_frame, root)
    folders: dict[str, dict[str, None]] = {}
    for sample in samples:
        if sample.image is None or sample.condition not in conditions:
            continue
        if categories is not None and sample.category not in categories:
            continue
        folder = Path(sample.image).parent.relative_to(root).as_posix()
        folders.setdefault(folder, {})[sample.image] = None
    return {folder: list(paths) for folder, paths in folders.items()}


def build_synthetic_root(
    dest: str | Path, spreadsheets_dir: str | Path, image_size: int = 8
) -> Path:
    """A stand-in VSCBench archive for tests: the real spreadsheets plus tiny placeholders.

    Copies the two spreadsheets from ``spreadsheets_dir`` into ``dest`` and writes one
    placeholder picture (a solid square, in the format its extension names) for every image
    file they name, in the archive's layout. Returns ``dest``.
    """
    dest, source = Path(dest), Path(spreadsheets_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (IMAGE_CENTRIC_XLSX, TEXT_CENTRIC_XLSX):
        (dest / name).write_bytes((source / name).read_bytes())
    image_frame = read_image_centric(dest / IMAGE_CENTRIC_XLSX)
    text_frame = read_text_centric(dest / TEXT_CENTRIC_XLSX)
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    for paths in expected_images(dest.resolve(), image_frame, text_frame).values():
        for path in map(Path, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            image = render_placeholder(path.name, image_size)
            image.save(path, format=formats.get(path.suffix.lower(), "PNG"))
    return dest
