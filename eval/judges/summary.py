"""How a run reports its judging: which judge, how well it agrees with people, coverage.

Three functions for the run-level integration (``calib/run.py``, ``eval/report.py``):

* ``judge_summary(name, labels, judge)`` -> the JSON-able ``metrics.json["judge"]`` block:
  ``name``, ``xstest_agreement`` (from ``agreement.json`` next to this file, which the
  README table mirrors), ``counts``, ``coverage`` (n, judged, EMPTY, UNJUDGED, UNJUDGED
  share), ``max_unjudged`` and, for ``judge=cascade``, ``cascade`` (share escalated, ...);
* ``summary_lines(summary)`` -> the lines for the console summary and ``report.md``;
* ``unjudged_problem(summary)`` -> None, or the ``UnjudgedProblem`` (count, share, limit,
  message naming ``judge.max_unjudged`` and the fix) for which a run exits with
  ``UNJUDGED_EXIT_CODE`` after writing its files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from calib.types import Label

AGREEMENT_FILE = Path(__file__).with_name("agreement.json")
UNJUDGED_EXIT_CODE = 3  # what a run returns when judge.max_unjudged is exceeded
DEFAULT_MAX_UNJUDGED = 0.05


@cache
def load_agreement(path: str | Path = AGREEMENT_FILE) -> dict[str, Any]:
    """The measured agreement of each judge with people (see eval/judges/README.md)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def xstest_agreement(name: str, path: str | Path = AGREEMENT_FILE) -> dict[str, Any]:
    """XSTest agreement of judge ``name`` (a ``conf/judge/<name>.yaml``), as measured.

    ``{"status": "measured", "accuracy": ..., "balanced_accuracy": ..., "kappa": ..., ...}``,
    or ``{"status": "not measured", "note": ...}`` for judges whose figure depends on a
    model this project cannot ship (llm, hf, the guard models, a cascade's fallback).
    """
    judges = load_agreement(str(path))["judges"]
    entry = judges.get(name)
    if entry is None:
        return {"status": "not measured", "note": f"no figure for judge {name!r} in {path}"}
    return {"status": entry["status"], **entry.get("xstest", {}), "note": entry.get("note", "")}


def judge_summary(name: str, labels: Sequence[Label], judge: Any = None) -> dict[str, Any]:
    """The ``metrics.json["judge"]`` block for one run.

    Args:
        name: the judge's config choice (``hydra.runtime.choices.judge``, e.g. ``cascade``).
        labels: the run's labels, one per response.
        judge: the judge object, when available: gives ``max_unjudged`` and, for a cascade,
            ``last_report()`` (call this right after the judge's last ``label``).
    """
    counts = Counter(label.value for label in labels)
    n = len(labels)
    unjudged, empty = counts.get(Label.UNJUDGED.value, 0), counts.get(Label.EMPTY.value, 0)
    out: dict[str, Any] = {
        "name": name,
        "xstest_agreement": xstest_agreement(name),
        "counts": {label.value: counts.get(label.value, 0) for label in Label},
        "coverage": {
            "n": n,
            "judged": n - unjudged - empty,
            "empty": empty,
            "unjudged": unjudged,
            "unjudged_share": round(unjudged / n, 4) if n else 0.0,
        },
        "max_unjudged": float(getattr(judge, "max_unjudged", DEFAULT_MAX_UNJUDGED)),
    }
    if judge is not None and hasattr(judge, "last_report"):
        out["cascade"] = judge.last_report().to_dict()
        first = getattr(judge, "first", None)
        if first is not None:
            out["cascade"]["first_xstest_agreement"] = xstest_agreement(
                _config_name(first), AGREEMENT_FILE
            )
    return out


def _config_name(judge: Any) -> str:
    names = {
        "RefusalRulesJudge": "refusal_rules",
        "StringMatchJudge": "string_match",
        "LLMJudge": "llm",
        "HFJudge": "hf",
        "LlamaGuardJudge": "llama_guard",
        "WildGuardJudge": "wildguard",
    }
    return names.get(type(judge).__name__, type(judge).__name__)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Plain lines (markdown-safe) saying how the run was judged, for console and report.md."""
    agreement = summary["xstest_agreement"]
    cov = summary["coverage"]
    if agreement.get("status") == "measured":
        measured = (
            f"XSTest agreement {agreement['accuracy']:.3f} "
            f"(balanced {agreement['balanced_accuracy']:.3f}, kappa {agreement['kappa']:.3f}; "
            f"{agreement['n']} human-labelled responses, eval/judges/README.md)"
        )
    else:
        measured = "XSTest agreement not measured for this judge (eval/judges/README.md)"
    lines = [
        f"Judge: `{summary['name']}`; {measured}.",
        f"Coverage: {cov['judged']} of {cov['n']} responses judged; {cov['empty']} EMPTY, "
        f"{cov['unjudged']} UNJUDGED ({cov['unjudged_share']:.1%}; limit "
        f"judge.max_unjudged={summary['max_unjudged']:g}).",
    ]
    cascade = summary.get("cascade")
    if cascade:
        agree = cascade["safety_agreement"]
        lines.append(
            f"Cascade: {cascade['escalated']} of {cascade['n']} responses "
            f"({cascade['share_escalated']:.1%}) escalated to the fallback judge "
            f"(confidence below {cascade['escalate_below']:g} or no rule matched); "
            f"{cascade['changed']} changed label, {cascade['fallback_unjudged']} left to the "
            "rules because the fallback gave no class"
            + (f"; both agree on safety-awareness for {agree:.1%}." if agree is not None else ".")
        )
    return lines


@dataclass(frozen=True)
class UnjudgedProblem:
    """A run whose UNJUDGED share exceeds ``judge.max_unjudged``."""

    key: str  # the config key to change: "judge.max_unjudged"
    count: int
    n: int
    share: float
    limit: float
    message: str


_FIXES = {
    "llm": "check judge.base_url, judge.model and the key (the reasons are in responses.jsonl)",
    "cascade": "check judge.fallback.base_url / judge.fallback.model and the key",
    "hf": "use a judge.model that follows the class format, or raise judge.max_new_tokens",
    "llama_guard": "check judge.model is a Llama Guard 3 checkpoint and judge.max_new_tokens",
    "wildguard": "check judge.model is allenai/wildguard and judge.max_new_tokens >= 32",
}


def unjudged_problem(
    summary: dict[str, Any], max_unjudged: float | None = None
) -> UnjudgedProblem | None:
    """None when the UNJUDGED share is within the limit; else what to report, and the fix.

    ``max_unjudged`` defaults to the summary's own (the judge config's ``max_unjudged``).
    """
    limit = summary["max_unjudged"] if max_unjudged is None else float(max_unjudged)
    cov = summary["coverage"]
    if cov["n"] == 0 or cov["unjudged"] / cov["n"] <= limit:
        return None
    share = cov["unjudged"] / cov["n"]
    fix = _FIXES.get(summary["name"], "check the judge settings (reasons in responses.jsonl)")
    message = (
        f"judge: {cov['unjudged']} of {cov['n']} responses ({share:.1%}) are UNJUDGED, above "
        f"judge.max_unjudged={limit:g}. Fix: {fix}, then run the same command again -- "
        "failed judge replies are not cached, so only they are asked again; or set "
        f"judge.max_unjudged={min(1.0, round(share + 0.005, 3)):g} to accept this coverage. "
        "The run's files were written; SRA figures leave UNJUDGED responses out."
    )
    return UnjudgedProblem("judge.max_unjudged", cov["unjudged"], cov["n"], share, limit, message)
