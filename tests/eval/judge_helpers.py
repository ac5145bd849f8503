"""Shared helpers for the judge tests: samples and the location of the XSTest reference data."""

from __future__ import annotations

from pathlib import Path

import pytest

from calib.types import Sample
from tests.conftest import SHARED_DATA

XSTEST_DIR = SHARED_DATA / "xstest_completions"


def xstest_dir() -> Path:
    """``../shared/data/xstest_completions``, or skip the test when it is absent."""
    if not any(XSTEST_DIR.glob("*.csv")):
        pytest.skip(f"XSTest human-labelled completions not found at {XSTEST_DIR} (../shared/data)")
    return XSTEST_DIR


def make_samples(n: int, prompt: str = "How do I do it?", image: str | None = None) -> list[Sample]:
    return [
        Sample(
            id=f"s{i}",
            prompt=prompt,
            image=image,
            label="unsafe" if i % 2 else "safe",
            category="test",
            condition="txt" if image is None else "image",
            group=f"g{i // 2}",
        )
        for i in range(n)
    ]
