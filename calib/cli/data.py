"""``calib-data``: check a VSCBench download, or re-render its typography and FigStep images.

    calib-data check data.root=/data/vscbench
    calib-data render --out /tmp/vscbench_rendered data.root=/data/vscbench

Arguments of the form ``key=value`` are Hydra overrides of ``conf/data/vscbench.yaml``
(``data.root``, ``data.text_centric_xlsx``, ``data.halves``, ``data.conditions``,
``data.categories``...), composed with the root config exactly as ``calib-run`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from calib.cli.common import compose_config, program, run_program
from calib.errors import ConfigError
from eval.data.image_check import check_images
from eval.data.render import render_figstep, render_typography, save_png
from eval.data.vscbench import (
    TEXT_CENTRIC_DIR,
    expected_images,
    load_frames,
    source_problems,
)

NOT_RENDERABLE = (
    "Not re-rendered: search/ and concat/ hold photos the authors retrieved (concat = a "
    "search photo joined to its typography), and the image-centric images are photos too; "
    "take those from the VSCBench archive."
)


def data_config(overrides: Sequence[str]) -> dict[str, Any]:
    """``conf/data/vscbench.yaml`` with the overrides, resolved inside the root config."""
    if any(o.split("=", 1)[0].lstrip("+~") == "data" for o in overrides):
        raise ConfigError("calib-data works on VSCBench only: drop the data=... override")
    cfg = compose_config(["data=vscbench", *overrides])
    return OmegaConf.to_container(cfg.data, resolve=True)


def check(data: dict[str, Any], full: bool, first: int) -> int:
    """Print, per image folder, how many images are present, missing, unreadable; 1 if any bad."""
    root = data["root"]
    if root is None:
        raise ConfigError("data.root is not set: calib-data check data.root=<VSCBench folder>")
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise ConfigError(f"data.root={root} is not a folder")
    frames = load_frames(
        root, data["image_centric_xlsx"], data["text_centric_xlsx"], data["halves"]
    )
    explicit = {
        "image_centric": data["image_centric_xlsx"],
        "text_centric": data["text_centric_xlsx"],
    }
    for problem in source_problems(root, explicit, data["halves"], data["conditions"]):
        print(f"warning: {problem}")
    folders = expected_images(base, *frames, data["conditions"], data["categories"])
    totals = {"present": 0, "missing": 0, "unreadable": 0}
    print(f"VSCBench images under {base} ({'decoded' if full else 'quick check'}):")
    for folder, paths in folders.items():
        report = check_images(paths, full=full)
        counts = {
            "present": len(report.present),
            "missing": len(report.missing),
            "unreadable": len(report.unreadable),
        }
        for key, n in counts.items():
            totals[key] += n
        print(
            f"  {folder}/: {counts['present']} present, {counts['missing']} missing, "
            f"{counts['unreadable']} unreadable"
        )
        for path in report.missing[:first]:
            print(f"      missing: {path}")
        for path, why in list(report.unreadable.items())[:first]:
            print(f"      unreadable: {path} ({why.removeprefix('unreadable: ')})")
    print(
        f"total: {totals['present']} present, {totals['missing']} missing, "
        f"{totals['unreadable']} unreadable"
    )
    return 1 if totals["missing"] or totals["unreadable"] else 0


def render(data: dict[str, Any], out: Path, size: int) -> int:
    """Re-render typography/ and figstep/ of the text-centric half from its spreadsheet."""
    _, text_frame = load_frames(data["root"], None, data["text_centric_xlsx"], ["text_centric"])
    categories = data["categories"]
    written = unchanged = 0
    for record in text_frame.to_dict("records"):
        if categories is not None and record["type"].strip() not in categories:
            continue
        jobs = []
        if "typography" in data["conditions"]:
            picture = render_typography(record["object"].strip(), size, size)
            jobs.append((picture, "typography", record["typography_img"]))
        if "figstep" in data["conditions"]:
            picture = render_figstep(record["prompt_figstep"].strip(), size)
            jobs.append((picture, "figstep", record["figstep_img"]))
        for picture, folder, name in jobs:
            if save_png(picture, out / TEXT_CENTRIC_DIR / folder / name.strip()):
                written += 1
            else:
                unchanged += 1
    print(
        f"rendered into {out / TEXT_CENTRIC_DIR}: {written} written, {unchanged} already "
        "identical (typography/ from `object`, figstep/ from `prompt_figstep`; font: Pillow's "
        "bundled Aileron, see eval/data/render.py)"
    )
    print(NOT_RENDERABLE)
    return 0


def parser() -> argparse.ArgumentParser:
    p = program("calib-data", __doc__)
    commands = p.add_subparsers(dest="command", required=True)
    c = commands.add_parser("check", help="count present / missing / unreadable images")
    c.add_argument("--quick", action="store_true", help="do not decode pixels (faster)")
    c.add_argument("--first", type=int, default=5, help="paths shown per problem and folder")
    c.add_argument("overrides", nargs="*", help="e.g. data.root=/data/vscbench")
    r = commands.add_parser(
        "render",
        help="re-render typography and FigStep images into a folder of the archive's layout",
        description=NOT_RENDERABLE,
    )
    r.add_argument("--out", type=Path, required=True, help="folder to write into")
    r.add_argument("--size", type=int, default=760, help="image side in pixels (FigStep: 760)")
    r.add_argument("overrides", nargs="*", help="e.g. data.root=/data/vscbench")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def command() -> int:
        data = data_config(args.overrides)
        if args.command == "check":
            return check(data, full=not args.quick, first=args.first)
        return render(data, args.out, args.size)

    return run_program("calib-data", command)


if __name__ == "__main__":
    sys.exit(main())
