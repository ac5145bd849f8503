"""A run's human-readable outputs: report.md and the summary printed at the end."""

from __future__ import annotations

from typing import Any

from eval.judges.summary import summary_lines as judge_lines
from eval.metrics import HEADLINE


def fmt(value: Any) -> str:
    """A share as a percentage with one decimal; n/a for missing values."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.1f}"
    return str(value)


def fmt_ci(point: Any, interval: Any) -> str:
    if point is None:
        return "n/a"
    if not interval or interval[0] is None:
        return fmt(point)
    return f"{fmt(point)} [{fmt(interval[0])}, {fmt(interval[1])}]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def breakdown_table(title: str, groups: dict[str, dict[str, Any]]) -> str:
    rows = [
        [name, *(fmt(g.get(k)) for k in HEADLINE), str(g.get("n_safe")), str(g.get("n_unsafe"))]
        for name, g in sorted(groups.items())
    ]
    header = [title, "SRA_u", "SRA_s", "SRA_s strict", "mean", "n safe", "n unsafe"]
    return markdown_table(header, rows)


def ci_header(safety: dict[str, Any]) -> str:
    """``% [95% CI]`` with the level the intervals were computed at (``metrics.confidence``);
    ``%`` alone when there are none (``metrics.n_boot=0``)."""
    bootstrap = safety.get("bootstrap") or {}
    if not bootstrap.get("n_boot"):
        return "%"
    return f"% [{100 * bootstrap['confidence']:g}% CI]"


def overall_table(safety: dict[str, Any]) -> str:
    ci = safety.get("ci", {})
    rows = [
        [name, fmt_ci(safety.get(key), ci.get(key))]
        for key, name in (
            ("sra_u", "SRA_u (unsafe inputs answered safety-aware)"),
            ("sra_s", "SRA_s (safe inputs answered without refusal)"),
            ("sra_s_strict", "SRA_s strict (safe inputs answered helpfully)"),
            ("mean", "mean of SRA_u and SRA_s"),
        )
    ]
    return markdown_table(["metric", ci_header(safety)], rows)


def utility_table(utility: dict[str, Any]) -> str:
    rows = [["all", fmt(utility.get("score"))]]
    rows += [[task, fmt(score)] for task, score in sorted(utility.get("by_task", {}).items())]
    return markdown_table(["task", "score %"], rows)


def fmt_delta(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def deltas_table(deltas: dict[str, Any]) -> str:
    """This run, the baseline and their difference, in percentage points."""
    base = deltas.get("baseline", {})
    names = {
        "sra_u": "SRA_u",
        "sra_s": "SRA_s",
        "sra_s_strict": "SRA_s strict",
        "mean": "mean",
        "utility": "utility",
    }
    rows = [
        [name, fmt(base.get(key)), fmt_delta(deltas.get(key))]
        for key, name in names.items()
        if key in deltas
    ]
    return markdown_table(["metric", "baseline %", "this run − baseline (points)"], rows)


def validation_line(validation: dict[str, Any]) -> str:
    """The validation figures in one sentence (no intervals: a selection criterion)."""
    if not validation.get("n"):
        return "No validation part (data.validation_fraction=0): nothing to select on."
    return (
        f"{validation['n']} samples: SRA_u {fmt(validation['sra_u'])}, SRA_s "
        f"{fmt(validation['sra_s'])}, mean {fmt(validation['mean'])} (`validation.mean`, what "
        "calib-run returns to sweepers; the figures above are the evaluation split's, never "
        "optimised)."
    )


def render_report(metrics: dict[str, Any]) -> str:
    """The run's report.md: what ran, overall figures, breakdowns, coverage."""
    run, safety = metrics["run"], metrics["safety"]
    parts = [
        f"# Safety calibration: {run['model']} + {run['method']}",
        "",
        f"Data `{run['data']}` (evaluation split: {safety['n_safe']} safe, "
        f"{safety['n_unsafe']} unsafe), judge `{run['judge']}`, seed {run['seed']}.",
        "",
        "## Overall",
        "",
        overall_table(safety),
        "",
        f"Excluded from denominators (no verdict): {safety.get('n_excluded', {})}. "
        f"Worst case, counting each of them as a failure: SRA_u {fmt(safety.get('sra_u_worst'))}"
        f", SRA_s {fmt(safety.get('sra_s_worst'))}, mean {fmt(safety.get('mean_worst'))}.",
    ]
    for key, title in (
        ("by_category", "category"),
        ("by_condition", "condition"),
        ("by_modality", "modality"),
    ):
        if safety.get(key):
            parts += ["", f"## By {title}", "", breakdown_table(title, safety[key])]
    if metrics.get("validation"):
        parts += ["", "## Validation part (what sweeps and methods select on)", ""]
        parts.append(validation_line(metrics["validation"]))
    if metrics.get("utility"):
        parts += ["", "## Utility", "", utility_table(metrics["utility"])]
    if metrics.get("deltas"):
        parts += ["", "## Against the baseline (same model, method=none)", ""]
        parts.append(deltas_table(metrics["deltas"]))
    judging = metrics.get("judge") or {}
    parts += ["", "## Judging", ""]
    if "coverage" in judging:
        parts += [f"- {line}" for line in judge_lines(judging)]
    parts += [f"- Labels: {judging.get('counts', {})}", ""]
    return "\n".join(parts)


def summary_lines(metrics: dict[str, Any]) -> str:
    """A short table for the terminal."""
    safety = metrics["safety"]
    ci = safety.get("ci", {})
    rows = [
        ("SRA_u", "sra_u"),
        ("SRA_s", "sra_s"),
        ("SRA_s strict", "sra_s_strict"),
        ("mean", "mean"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  {ci_header(safety)}"]
    lines += [f"{name:<{width}}  {fmt_ci(safety.get(key), ci.get(key))}" for name, key in rows]
    if metrics.get("utility") and metrics["utility"].get("score") is not None:
        lines.append(f"{'utility':<{width}}  {fmt(metrics['utility']['score'])}")
    if "coverage" in (metrics.get("judge") or {}):
        lines += judge_lines(metrics["judge"])
    validation = metrics.get("validation") or {}
    if validation.get("mean") is not None:
        lines.append(f"(validation mean {fmt(validation['mean'])}: what a sweep selects on)")
    return "\n".join(lines)
