"""Lining runs up side by side — a table and the trade-off plots (``calib-compare``).

A *run folder* is one holding ``metrics.json`` (finished), or ``config.yaml`` / ``.hydra/``
without it (failed or still running: listed, never crashed on). :func:`compare` writes into
``out`` (default ``<first folder>/compare``; :mod:`calib.cli.compare` is the command):
``comparison.md``, ``comparison.csv``, ``sra_tradeoff.png`` (SRA_s vs SRA_u with the Pareto
frontier), ``safety_vs_utility.png`` (utility vs safety mean, when runs scored utility) and
``by_category.png``; and prints the markdown table.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from calib.io import write_text_atomic
from eval.metrics import HEADLINE
from eval.plots import Point, category_bars, tradeoff_plot
from eval.report import fmt, fmt_ci, fmt_delta, markdown_table

DELTA_KEYS = (*HEADLINE, "utility")
HEADERS = {"sra_u": "SRA_u", "sra_s": "SRA_s", "sra_s_strict": "SRA_s strict", "mean": "mean"}
FIXED_OVERRIDES = ("model", "method")  # own columns already
IGNORED_PREFIXES = ("hydra.", "paths.", "logger")  # where things go, not what ran
OUTPUT_DIR = "compare"


@dataclass
class RunRecord:
    """One run folder: its metrics (None when failed/unfinished) and its overrides."""

    path: Path
    metrics: dict[str, Any] | None
    overrides: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.metrics is not None


def is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in ("metrics.json", "config.yaml", ".hydra"))


def find_runs(folders: Sequence[Path]) -> list[Path]:
    """Run folders in or under ``folders`` (a run folder itself, or a sweep), in a stable order."""
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a folder: give a run folder or a multirun folder"
            )
        if is_run_folder(folder):
            found.append(folder)
            continue
        candidates = {
            p.parent
            for pattern in ("metrics.json", "config.yaml", ".hydra")
            for p in folder.rglob(pattern)
            if OUTPUT_DIR not in p.relative_to(folder).parts
            and "wandb" not in p.relative_to(folder).parts
        }
        # a run's own subfolders (method/, ...) are not runs
        runs = [c for c in candidates if not any(o != c and o in c.parents for o in candidates)]
        found += sorted(runs, key=_natural_key)
    return list(dict.fromkeys(found))


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def read_overrides(run_dir: Path) -> dict[str, str]:
    """``key -> value`` from Hydra's ``.hydra/overrides.yaml`` (empty when absent)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    pairs = (str(item).lstrip("+~").split("=", 1) for item in items)
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def load_run(run_dir: Path) -> RunRecord:
    overrides = read_overrides(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        return RunRecord(
            run_dir, None, overrides, "no metrics.json: the run failed or is unfinished"
        )
    try:
        metrics = json.loads(path.read_text())
        _ = metrics["safety"]["mean"]  # the one key every table row needs
    except (OSError, ValueError, KeyError, TypeError) as err:
        return RunRecord(
            run_dir, None, overrides, f"metrics.json unreadable: {type(err).__name__}: {err}"
        )
    return RunRecord(run_dir, metrics, overrides)


def varying_settings(records: Sequence[RunRecord]) -> list[str]:
    """Override keys whose value differs between runs (model and method have own columns)."""
    keys = sorted({k for r in records for k in r.overrides})
    keep = []
    for key in keys:
        if key in FIXED_OVERRIDES or key.startswith(IGNORED_PREFIXES):
            continue
        if len({r.overrides.get(key, "") for r in records}) > 1:
            keep.append(key)
    return keep


def _get(metrics: dict[str, Any], *path: str) -> Any:
    node: Any = metrics
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def run_values(record: RunRecord) -> dict[str, Any]:
    """The figures of one finished run: point values, intervals, deltas, utility."""
    m = record.metrics or {}
    safety = m["safety"]
    values: dict[str, Any] = {
        "run": record.path.name,
        "path": str(record.path),
        "model": _get(m, "run", "model"),
        "method": _get(m, "run", "method"),
    }
    for key in HEADLINE:
        interval = _get(safety, "ci", key) or [None, None]
        values[key], values[f"{key}_lo"], values[f"{key}_hi"] = safety.get(key), *interval[:2]
    values["validation_mean"] = _get(m, "validation", "mean")
    values["utility"] = _get(m, "utility", "score")
    for key in DELTA_KEYS:
        values[f"delta_{key}"] = _get(m, "deltas", key)
    return values


def label_of(values: dict[str, Any], record: RunRecord, varying: Sequence[str]) -> str:
    settings = ",".join(f"{k.split('.')[-1]}={record.overrides.get(k, '')}" for k in varying)
    return f"{values['method']}" + (f" ({settings})" if settings else "")


def tables(records: Sequence[RunRecord]) -> tuple[str, str]:
    """(markdown, csv) of the finished runs; shares in percent in markdown, raw in CSV."""
    done = [r for r in records if r.ok]
    varying = varying_settings(done)
    rows = [run_values(r) for r in done]
    levels = {_get(r.metrics, "safety", "bootstrap", "confidence") for r in done}
    level = f" [{100 * levels.pop():g}% CI]" if len(levels) == 1 and None not in levels else ""
    header = ["run", "model", "method", *varying, *(f"{HEADERS[k]}{level}" for k in HEADLINE)]
    header += ["validation mean (objective)", "utility"]
    header += ["Δ SRA_u", "Δ SRA_s", "Δ SRA_s strict", "Δ mean", "Δ utility"]
    md_rows = []
    for record, v in zip(done, rows, strict=True):
        cells = [
            v["run"],
            str(v["model"]),
            str(v["method"]),
            *(record.overrides.get(k, "") for k in varying),
        ]
        cells += [fmt_ci(v[k], [v[f"{k}_lo"], v[f"{k}_hi"]]) for k in HEADLINE]
        cells += [fmt(v["validation_mean"]), fmt(v["utility"])]
        cells += [fmt_delta(v[f"delta_{k}"]) for k in DELTA_KEYS]
        md_rows.append(cells)
    markdown = markdown_table(header, md_rows) if md_rows else "(no finished runs)"
    columns = ["run", "model", "method", *varying]
    columns += [f"{k}{s}" for k in HEADLINE for s in ("", "_lo", "_hi")]
    columns += ["validation_mean", "utility", *(f"delta_{k}" for k in DELTA_KEYS), "path"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record, v in zip(done, rows, strict=True):
        merged = {**v, **{k: record.overrides.get(k, "") for k in varying}}
        writer.writerow(["" if merged.get(c) is None else merged.get(c) for c in columns])
    return markdown, buffer.getvalue()


def plots(records: Sequence[RunRecord], out: Path) -> list[Path]:
    """The trade-off plots and per-category bars of the finished runs."""
    done = [r for r in records if r.ok]
    if not done:
        return []
    varying = varying_settings(done)
    values = [run_values(r) for r in done]
    labels = [label_of(v, r, varying) for v, r in zip(values, done, strict=True)]
    labels = [
        lab if labels.count(lab) == 1 else f"{lab} [{v['run']}]"
        for lab, v in zip(labels, values, strict=True)
    ]
    written = []
    sra = [
        Point(
            lab,
            v["sra_s"],
            v["sra_u"],
            (v["sra_s_lo"], v["sra_s_hi"]),
            (v["sra_u_lo"], v["sra_u_hi"]),
        )
        for lab, v in zip(labels, values, strict=True)
        if v["sra_s"] is not None and v["sra_u"] is not None
    ]
    if sra:
        title = "Safety calibration: safe inputs answered vs unsafe inputs refused"
        written.append(tradeoff_plot(sra, "SRA_s", "SRA_u", title, out / "sra_tradeoff.png"))
    utility = [
        Point(lab, v["utility"], v["mean"], None, (v["mean_lo"], v["mean_hi"]))
        for lab, v in zip(labels, values, strict=True)
        if v["utility"] is not None and v["mean"] is not None
    ]
    if utility:
        title = "What calibration costs: utility vs safety mean"
        written.append(
            tradeoff_plot(
                utility,
                "utility",
                "safety mean (SRA_u+SRA_s)/2",
                title,
                out / "safety_vs_utility.png",
            )
        )
    series = {
        lab: r.metrics["safety"].get("by_category") or {}
        for lab, r in zip(labels, done, strict=True)
    }
    if any(series.values()):
        written.append(category_bars(series, out / "by_category.png"))
    return written


def objective_note(records: Sequence[RunRecord]) -> str:
    """Which metric the runs returned to a sweeper (what a sweep optimised), and the warning
    that goes with selecting among them."""
    objectives = sorted({str(_get(r.metrics, "run", "objective")) for r in records if r.ok})
    if objectives == ["None"]:
        return "The runs predate the validation split: they record no sweep objective."
    return (
        f"Sweep objective: `{', '.join(objectives)}` (the validation part of the calibration "
        "split). A sweep selects on it; the evaluation figures (SRA columns) are reported, "
        "never optimised, so pick the best run by the objective column, then read its "
        "evaluation figures."
    )


def problems_text(records: Sequence[RunRecord]) -> str:
    failed = [r for r in records if not r.ok]
    if not failed:
        return ""
    lines = [f"{len(failed)} run(s) without results (not in the table):"]
    lines += [f"  - {r.path}: {r.problem}" for r in failed]
    return "\n".join(lines)


def compare(
    folders: Sequence[Path], out: Path | None = None
) -> tuple[list[RunRecord], Path, list[Path]]:
    """Find, load, tabulate and plot; returns the records, the output folder and the plots."""
    folders = [Path(f) for f in folders]
    records = [load_run(p) for p in find_runs(folders)]
    out = Path(out) if out is not None else folders[0] / OUTPUT_DIR
    markdown, table_csv = tables(records)
    problems = problems_text(records)
    body = [
        "# Comparison",
        "",
        f"Runs: {len(records)} ({sum(r.ok for r in records)} finished).",
        "",
        markdown,
        "",
        objective_note(records),
    ]
    if problems:
        body += ["", "```", problems, "```"]
    write_text_atomic(out / "comparison.md", "\n".join(body) + "\n")
    write_text_atomic(out / "comparison.csv", table_csv)
    return records, out, plots(records, out)
