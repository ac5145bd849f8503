"""Fixtures for the data layer: the real VSCBench spreadsheets and synthetic archives.

``vscbench_sheets`` is ``../shared/data/vscbench`` (tests skip when it is absent: a fresh
clone has no ``../shared``). ``synthetic_root`` is a stand-in VSCBench archive (the real
spreadsheets plus tiny placeholder images, built by ``eval.vscbench.build_synthetic_root``),
shared by the session and never modified; ``broken_root`` is a second one with one image
removed and one truncated (``broken_files``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.vscbench import (
    IMAGE_CENTRIC_DIR,
    TEXT_CENTRIC_DIR,
    build_synthetic_root,
    read_image_centric,
    read_text_centric,
)

SHARED_VSCBENCH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vscbench"


@pytest.fixture(scope="session")
def vscbench_sheets() -> Path:
    if not (SHARED_VSCBENCH / "vscbench_image_centric.xlsx").is_file():
        pytest.skip(f"VSCBench spreadsheets not found at {SHARED_VSCBENCH} (../shared/data)")
    return SHARED_VSCBENCH


@pytest.fixture(scope="session")
def synthetic_root(vscbench_sheets, tmp_path_factory) -> Path:
    return build_synthetic_root(tmp_path_factory.mktemp("vscbench_ok"), vscbench_sheets)


@pytest.fixture(scope="session")
def broken_files(vscbench_sheets) -> dict[str, str]:
    """Paths (relative to the root) of the image to remove and the one to truncate."""
    image_row = read_image_centric(vscbench_sheets / "vscbench_image_centric.xlsx").iloc[0]
    text_row = read_text_centric(vscbench_sheets / "vscbench_text_centric.xlsx").iloc[1]
    return {
        "removed": f"{TEXT_CENTRIC_DIR}/typography/{text_row['typography_img']}",
        "truncated": f"{IMAGE_CENTRIC_DIR}/{image_row['Category']}/{image_row['unsafe_img_1']}",
    }


@pytest.fixture(scope="session")
def broken_root(vscbench_sheets, broken_files, tmp_path_factory) -> Path:
    root = build_synthetic_root(tmp_path_factory.mktemp("vscbench_broken"), vscbench_sheets)
    (root / broken_files["removed"]).unlink()
    truncated = root / broken_files["truncated"]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return root
