"""``calib-compare``: line runs up side by side — a table and the trade-off plots.

    calib-compare outputs/multirun/2025-01-31/12-00-00            # one sweep
    calib-compare outputs/2025-01-31/09-* outputs/2025-01-31/10-*  # single run folders
    calib-compare <sweep> --out reports/sweep1                     # where the files go

Prints a markdown table (model, method, the settings that vary, SRA_u, SRA_s, strict SRA_s,
mean with confidence intervals, utility, deltas to method=none) and writes
``comparison.md``, ``comparison.csv``, ``sra_tradeoff.png``, ``safety_vs_utility.png`` and
``by_category.png``. Runs that failed or are still running (no metrics.json) are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calib.cli.common import program, run_program
from eval.compare import OUTPUT_DIR, compare


def main(argv: Sequence[str] | None = None) -> int:
    parser = program("calib-compare", __doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="multirun folder(s) or run folder(s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default: <first folder>/{OUTPUT_DIR})",
    )
    args = parser.parse_args(argv)
    return run_program("calib-compare", lambda: _compare_command(parser, args))


def _compare_command(parser, args) -> int:
    try:
        records, out, written = compare(args.folders, args.out)
    except FileNotFoundError as err:
        parser.error(str(err))
    if not records:
        print(f"no run folders found under {', '.join(map(str, args.folders))}")
        return 1
    print((out / "comparison.md").read_text())
    names = ["comparison.md", "comparison.csv", *(p.name for p in written)]
    print(f"written to {out}: {', '.join(names)}")
    return 0 if any(r.ok for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
