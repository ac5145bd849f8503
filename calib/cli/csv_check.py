"""CSV files people hand to the programs (``calib-judge eval labels=...``), checked before
pandas reads them: a file that is not UTF-8, is empty, or was cut off inside a quoted field
(which pandas reads silently as one shifted row) is named, with its line and the fix."""

from __future__ import annotations

import csv
from pathlib import Path

from calib.errors import DataError
from eval.judges.agreement import LabelledResponse, labels_files, load_labelled


def check_csv(path: Path, key: str) -> None:
    """Raise DataError naming ``key``, the file and the line when ``path`` is not a clean CSV."""
    fix = f"re-export it as UTF-8 CSV, or point {key} at another file"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{key}: {path} is not UTF-8 text (byte {err.start}: {err.reason}): {fix}"
        ) from None
    except OSError as err:
        raise DataError(f"{key}: cannot read {path} ({err.strerror or err})") from None
    if not text.strip():
        raise DataError(f"{key}: {path} is empty: {fix}")
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    try:
        header = next(reader)
        for row in reader:
            if row and len(row) != len(header):
                raise DataError(
                    f"{key}: {path} line {reader.line_num} has {len(row)} field(s), the header "
                    f"{len(header)}: a quote or comma out of place, or a cut file? {fix}"
                )
    except csv.Error as err:
        raise DataError(
            f"{key}: {path} is malformed near line {reader.line_num} ({err}); a file cut off "
            f"inside a quoted field ends like this: {fix}"
        ) from None


def read_labels(path: str | Path, key: str = "labels") -> list[LabelledResponse]:
    """``load_labelled`` after checking every CSV; its errors become DataErrors."""
    try:
        files = labels_files(path)
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    for file in files:
        check_csv(file, key)
    try:
        return load_labelled(path)
    except ValueError as err:  # a missing column or an unknown final_label (names the file)
        raise DataError(f"{key}: {err}") from None
