"""Inputs that looked fine to a quick look: a spreadsheet with a header and no rows, and a PNG
whose chunks are intact but whose compressed data is broken."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from calib.errors import DataError
from eval.data.image_check import check_images, image_problem
from eval.data.vscbench import (
    IMAGE_CENTRIC_COLUMNS,
    IMAGE_CENTRIC_DIR,
    load_vscbench,
    read_image_centric,
)


def broken_png(path: Path) -> Path:
    """A PNG whose IDAT holds garbage under a correct CRC: Pillow's verify() passes it."""
    Image.new("RGB", (16, 16), "red").save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    body = bytes(b ^ 0x5A for b in data[start + 8 : start + 8 + length])
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF)
    data[start + 8 : start + 8 + length] = body
    data[start + 8 + length : start + 12 + length] = crc
    path.write_bytes(bytes(data))
    return path


def test_a_png_with_broken_data_is_caught_by_the_loaders_check(tmp_path):
    path = broken_png(tmp_path / "broken.png")
    assert image_problem(path, full=False) is None, "the quick look passes it"
    assert image_problem(path, full=True).startswith("unreadable")
    report = check_images([path], full=True)
    assert report.unreadable and not report.present


def test_the_vscbench_loader_decodes_images_in_full(synthetic_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root, copy_function=os.symlink)  # cheap: links
    victim = next((root / IMAGE_CENTRIC_DIR).rglob("*.png"))
    victim.unlink()
    broken_png(victim)
    with pytest.raises(DataError, match=r"1 unreadable") as caught:
        load_vscbench(
            str(root), None, None, ["image_centric"], ["image"], None, "error", 0.2, 0.25, 0, None
        )
    assert victim.name in str(caught.value)


def test_a_spreadsheet_with_a_header_and_no_rows_is_named(tmp_path):
    path = tmp_path / "vscbench_image_centric.xlsx"
    pd.DataFrame(columns=list(IMAGE_CENTRIC_COLUMNS)).to_excel(path, index=False)
    with pytest.raises(DataError, match=r"data\.image_centric_xlsx: .* header but no rows"):
        read_image_centric(path)
