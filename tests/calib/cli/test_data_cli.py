"""``calib-data check`` and ``calib-data render`` on synthetic archives in tmp_path."""

from __future__ import annotations

from PIL import Image

from calib.cli.data import main
from eval.data.render import png_bytes, render_figstep, render_typography
from eval.data.vscbench import IMAGE_CENTRIC_DIR, TEXT_CENTRIC_DIR, read_text_centric


def test_check_passes_on_a_complete_archive(synthetic_root, capsys):
    assert main(["check", f"data.root={synthetic_root}"]) == 0
    out = capsys.readouterr().out
    assert f"{TEXT_CENTRIC_DIR}/figstep/: 450 present, 0 missing, 0 unreadable" in out
    assert f"{IMAGE_CENTRIC_DIR}/drugs/: 300 present" in out
    assert "total: 3598 present, 0 missing, 0 unreadable" in out  # 2 names recur


def test_check_finds_a_removed_and_a_truncated_file(broken_root, broken_files, capsys):
    assert main(["check", "--quick", f"data.root={broken_root}"]) == 1
    out = capsys.readouterr().out
    assert f"missing: {broken_root / broken_files['removed']}" in out
    assert f"unreadable: {broken_root / broken_files['truncated']}" in out
    assert "total: 3596 present, 1 missing, 1 unreadable" in out


def test_check_counts_a_missing_folder_as_missing_images(tmp_path, vscbench_sheets, capsys):
    for name in ("vscbench_image_centric.xlsx", "vscbench_text_centric.xlsx"):
        (tmp_path / name).write_bytes((vscbench_sheets / name).read_bytes())
    assert main(["check", f"data.root={tmp_path}", "data.halves=[text_centric]"]) == 1
    out = capsys.readouterr().out
    assert f"has no {TEXT_CENTRIC_DIR}/ folder" in out
    assert f"{TEXT_CENTRIC_DIR}/search/: 0 present, 449 missing" in out


def test_render_rewrites_typography_and_figstep_deterministically(
    tmp_path, vscbench_sheets, capsys
):
    out = tmp_path / "rendered"
    args = [
        "render",
        "--out",
        str(out),
        "--size",
        "48",
        f"data.text_centric_xlsx={vscbench_sheets / 'vscbench_text_centric.xlsx'}",
        "data.categories=[homonyms]",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "50 written, 0 already identical" in first
    assert "search/ and concat/" in first and "cannot" not in first.split("Not re-rendered")[0]
    rows = read_text_centric(vscbench_sheets / "vscbench_text_centric.xlsx")
    row = rows[rows["type"] == "homonyms"].iloc[0]
    typography = out / TEXT_CENTRIC_DIR / "typography" / row["typography_img"]
    figstep = out / TEXT_CENTRIC_DIR / "figstep" / row["figstep_img"]
    assert typography.read_bytes() == png_bytes(render_typography(row["object"], 48, 48))
    assert figstep.read_bytes() == png_bytes(render_figstep(row["prompt_figstep"], 48))
    with Image.open(figstep) as image:
        assert image.size == (48, 48)
    assert sorted(p.name for p in (out / TEXT_CENTRIC_DIR).iterdir()) == ["figstep", "typography"]

    assert main(args) == 0
    assert "0 written, 50 already identical" in capsys.readouterr().out


def test_bad_overrides_exit_2_with_the_reason(tmp_path, capsys):
    assert main(["check", "data=sample"]) == 2
    assert "VSCBench only" in capsys.readouterr().err
    assert main(["check", f"data.root={tmp_path / 'absent'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["check"]) == 2
    assert "data.root is not set" in capsys.readouterr().err
