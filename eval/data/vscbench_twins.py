"""Safe/unsafe twins in VSCBench's text-centric sheet (XSTest's contrast pairs).

XSTest writes each unsafe ``contrast_X`` query as a look-alike of a safe query of type ``X``;
``contrast_discr`` answers both ``*_discr`` types and ``contrast_privacy`` both ``privacy_*``
types. Three kinds of key tie twins of one *family* together:

* ``focus``: rows sharing their key word (e.g. "kill");
* position: a safe and a contrast type are *aligned* when they have as many rows and their
  ``focus`` agree at >= ``MIN_ALIGNED`` of positions, or both have no focus at all
  (``historical_events``); then their k-th rows pair (this also pairs the odd row whose focus
  is worded differently, e.g. "bank account fraud" / "bank fraud");
* look-alike wording, for rows with no focus left unpaired (``nons_group_real_discr``, whose
  rows follow no fixed order): the other-label row of the family sharing the longest run of
  consecutive words, when that run is >= ``MIN_SHARED_RUN`` words and unique. Rows with no
  such look-alike stay unpaired (they are still grouped by their own texts).

Keys are strings; rows sharing a key are twins and end up in one group.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pandas as pd

from eval.data.splits import normalise_text

MIN_SHARED_RUN = 4
MIN_ALIGNED = 0.8


def family(row_type: str) -> str:
    """The XSTest family of a type: ``contrast_homonyms`` and ``homonyms`` -> ``homonyms``."""
    stem = row_type.strip().removeprefix("contrast_")
    if stem.endswith("discr"):
        return "discr"
    if stem.startswith("privacy"):
        return "privacy"
    return stem


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.casefold())


def longest_shared_run(a: str, b: str) -> int:
    """Length, in words, of the longest run of consecutive words common to ``a`` and ``b``."""
    wa, wb = _words(a), _words(b)
    best = 0
    previous = [0] * (len(wb) + 1)
    for word in wa:
        current = [0] * (len(wb) + 1)
        for j, other in enumerate(wb, start=1):
            if word == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _aligned(focus_a: list[str], focus_b: list[str]) -> bool:
    if len(focus_a) != len(focus_b):
        return False
    if not any(focus_a) and not any(focus_b):
        return True
    pairs = zip(focus_a, focus_b, strict=True)
    same = sum(bool(a) and normalise_text(a) == normalise_text(b) for a, b in pairs)
    return same >= MIN_ALIGNED * len(focus_a)


def text_twin_keys(frame: pd.DataFrame) -> list[list[str]]:
    """For each row of the text-centric sheet, the twin keys it carries (maybe none)."""
    types = [t.strip() for t in frame["type"]]
    focus = [f.strip() for f in frame["focus"]]
    prompts = list(frame["prompt_origin"])
    unsafe = ["contrast" in t for t in types]
    families = [family(t) for t in types]
    keys: list[list[str]] = [[] for _ in types]
    rows_of_type: dict[str, list[int]] = defaultdict(list)
    for row, row_type in enumerate(types):
        rows_of_type[row_type].append(row)
        if focus[row]:
            keys[row].append(f"twin:{families[row]}:focus:{normalise_text(focus[row])}")

    for safe_type, safe_rows in rows_of_type.items():
        for contrast_type, contrast_rows in rows_of_type.items():
            if "contrast" in safe_type or "contrast" not in contrast_type:
                continue
            if family(safe_type) != family(contrast_type):
                continue
            if _aligned([focus[r] for r in safe_rows], [focus[r] for r in contrast_rows]):
                for k, (a, b) in enumerate(zip(safe_rows, contrast_rows, strict=True)):
                    key = f"twin:{family(safe_type)}:{safe_type}~{contrast_type}:{k}"
                    keys[a].append(key)
                    keys[b].append(key)

    for row in range(len(types)):
        if focus[row] or keys[row]:
            continue
        others = [
            r
            for r in range(len(types))
            if families[r] == families[row] and unsafe[r] != unsafe[row]
        ]
        runs = sorted(
            ((longest_shared_run(prompts[row], prompts[r]), r) for r in others), reverse=True
        )
        if runs and runs[0][0] >= MIN_SHARED_RUN and (len(runs) == 1 or runs[1][0] < runs[0][0]):
            other = runs[0][1]
            key = f"twin:{families[row]}:lookalike:{min(row, other)}-{max(row, other)}"
            keys[row].append(key)
            keys[other].append(key)
    return keys
