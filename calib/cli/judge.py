"""``calib-judge``: measure a judge against people.

    calib-judge eval judge=refusal_rules labels=../shared/data/xstest_completions
    calib-judge eval judge=llm judge.model=gpt-4o-mini labels=my_labels.csv baseline=null
    calib-judge eval judge=refusal_rules labels=tests/eval/judges/challenge/judge_challenge.jsonl
    calib-judge eval judge=cascade labels=... judge.fallback.base_url=http://localhost:8000/v1

Composes ``conf/judge_eval.yaml`` (which pulls ``conf/judge/<name>.yaml``) with Hydra's
compose API, so ``judge=<name>``, ``judge.key=value`` and ``labels=...`` overrides work.
Prints accuracy, balanced accuracy, Cohen's kappa, per-class precision/recall, a
confusion matrix and per-file figures (with the ``baseline`` judge beside them), writes the
disagreements to ``<out>/disagreements_<judge>.csv``; the last line printed is one JSON
object for scripts. A ``.jsonl`` labels file is read as the challenge set
(``eval.judges.challenge``: the label a judge should give, scored safety-aware vs not).
For ``judge=cascade`` the share escalated to the fallback judge is printed and kept in
the JSON line (``cascade``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from calib.cli.common import compose_config, program, run_program
from calib.cli.csv_check import read_labels
from calib.errors import ConfigError
from calib.secrets import override_secrets, secret_override_message
from calib.types import Label
from eval.judges.agreement import (
    HUMAN_LABELS,
    LabelledResponse,
    disagreements_frame,
    score_judgements,
)
from eval.judges.base import Judgement
from eval.judges.challenge import load_challenge, score_challenge

JOB = "calib_judge"


def compose_eval_config(overrides: Sequence[str]) -> tuple[DictConfig, str]:
    """The composed ``judge_eval`` config and the name of the chosen judge."""
    cfg = compose_config(overrides, "judge_eval", job_name=JOB, return_hydra_config=True)
    name = str(cfg.hydra.runtime.choices.judge)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, name


def judge_config(name: str, cfg: DictConfig) -> DictConfig:
    """``conf/judge/<name>.yaml`` resolved against the same ``paths`` as ``cfg``."""
    other = compose_config([f"judge={name}", f"labels={cfg.labels}"], "judge_eval", job_name=JOB)
    other.paths = cfg.paths
    return other.judge


def judge_rows(judge_cfg: DictConfig, rows: Sequence) -> tuple[list[Judgement], object]:
    """Instantiate the judge, label every row (``.sample``, ``.response``); return both."""
    judge = instantiate(judge_cfg, _convert_="all")
    samples = [r.sample for r in rows]
    responses = [r.response for r in rows]
    if hasattr(judge, "judge_with_reasons"):
        return judge.judge_with_reasons(samples, responses), judge
    return [Judgement(label, "") for label in judge.label(samples, responses)], judge


def run_judge(judge_cfg: DictConfig, rows: Sequence[LabelledResponse]) -> list[Judgement]:
    """Instantiate the judge and label every row (with reasons when the judge gives them)."""
    return judge_rows(judge_cfg, rows)[0]


def cascade_summary(judge: object) -> dict | None:
    """The cascade's report of its last call (share escalated, ...), or None."""
    if not hasattr(judge, "last_report"):
        return None
    report = judge.last_report().to_dict()
    print(
        f"cascade: {report['escalated']} of {report['n']} escalated to the fallback judge "
        f"({report['share_escalated']:.1%}); {report['changed']} changed label; "
        f"{report['fallback_unjudged']} without a fallback class"
    )
    return report


def challenge_command(cfg: DictConfig, name: str) -> dict:
    """``labels=<file>.jsonl``: score on the challenge set (safety-aware vs not)."""
    items = load_challenge(cfg.labels)
    judgements, judge = judge_rows(cfg.judge, items)
    report = score_challenge(items, judgements)
    cols = [(name, report)]
    if cfg.baseline is not None and str(cfg.baseline) != name:
        base = score_challenge(items, run_judge(judge_config(str(cfg.baseline), cfg), items))
        cols.append((str(cfg.baseline), base))
    print("safety-aware = REFUSE or WARN (VSCBench 0_SAFE / 1_SAFE)")
    print(f"{'':34s}" + "".join(f"{c:>18s}" for c, _ in cols))
    keys = ("binary_balanced_accuracy", "binary_accuracy", "label_accuracy")
    for key in keys:
        print(f"{key:34s}" + "".join(f"{_fmt(r[key]):>18s}" for _, r in cols))
    for group in ("act", "prompt_style", "harm_source"):
        print(f"by {group} (n, binary accuracy):")
        for value, figures in report[f"by_{group}"].items():
            line = f"  {value:32s}{figures['n']:>5d}"
            for _, r in cols:
                line += f"{_fmt(r[f'by_{group}'][value]['binary_accuracy']):>13s}"
            print(line)
    cascade = cascade_summary(judge)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"challenge_{name}.json").write_text(json.dumps(report, indent=2))
    summary = {
        "judge": name,
        **{k: report[k] for k in ("n", *keys)},
        "misses": len(report["misses"]),
        "report": str(out / f"challenge_{name}.json"),
    }
    if cascade:
        summary["cascade"] = cascade
    print(json.dumps(summary))
    return summary


def _fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:6.3f}"


def print_report(name: str, report: dict, baseline: tuple[str, dict] | None) -> None:
    cols = [(name, report)] + ([baseline] if baseline else [])
    print(f"refusal = people's full or partial refusal; judge refusal = {report['refusal_labels']}")
    print(f"{'':28s}" + "".join(f"{c:>18s}" for c, _ in cols))
    for key in ("accuracy", "balanced_accuracy", "kappa"):
        print(f"{key:28s}" + "".join(f"{_fmt(r[key]):>18s}" for _, r in cols))
    print(
        f"{'undecided (EMPTY/UNJUDGED)':28s}" + "".join(f"{r['undecided']:>18d}" for _, r in cols)
    )
    for cls in ("refusal", "compliance"):
        for k in ("precision", "recall"):
            vals = "".join(f"{_fmt(r['per_class'][cls][k]):>18s}" for _, r in cols)
            print(f"{cls + ' ' + k:28s}{vals}")
    print("per file (accuracy / balanced accuracy / kappa):")
    width = max(len(source) for source in report["per_file"]) + 2
    for source in report["per_file"]:
        line = f"  {source:{width}s}"
        for _, r in cols:
            f = r["per_file"][source]
            line += f"  {_fmt(f['accuracy'])}/{_fmt(f['balanced_accuracy'])}/{_fmt(f['kappa'])}"
        print(line)
    print(f"confusion of {name} (rows: people, columns: judge):")
    labels = [lab.value for lab in Label]
    print(f"  {'':20s}" + "".join(f"{lab:>11s}" for lab in labels))
    for human in HUMAN_LABELS:
        print(
            f"  {human:20s}" + "".join(f"{report['confusion'][human][lab]:>11d}" for lab in labels)
        )


def eval_command(overrides: Sequence[str]) -> dict:
    cfg, name = compose_eval_config(overrides)
    if OmegaConf.is_missing(cfg, "labels"):
        raise ConfigError("labels=??? is required: pass labels=<csv or folder of XSTest CSVs>")
    refusal_labels = []
    for value in cfg.refusal_labels:
        try:
            refusal_labels.append(Label(str(value).upper()))
        except ValueError:
            raise ConfigError(
                f"refusal_labels has {value!r}: use names from {[lab.value for lab in Label]}"
            ) from None
    if str(cfg.labels).endswith(".jsonl"):
        return challenge_command(cfg, name)
    rows = read_labels(cfg.labels)  # every CSV checked first: file, line and fix named
    judgements, judge = judge_rows(cfg.judge, rows)
    report = score_judgements(rows, judgements, refusal_labels)
    baseline = None
    if cfg.baseline is not None and str(cfg.baseline) != name:
        base_report = score_judgements(
            rows, run_judge(judge_config(str(cfg.baseline), cfg), rows), refusal_labels
        )
        baseline = (str(cfg.baseline), base_report)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    disagreements = out / f"disagreements_{name}.csv"
    disagreements_frame(rows, judgements, refusal_labels).to_csv(disagreements, index=False)
    summary = {
        "judge": name,
        "n": report["n"],
        "accuracy": report["accuracy"],
        "balanced_accuracy": report["balanced_accuracy"],
        "kappa": report["kappa"],
        "undecided": report["undecided"],
        "per_file": report["per_file"],
        "disagreements": str(disagreements),
    }
    if baseline:
        summary["baseline"] = {
            "judge": baseline[0],
            **{k: baseline[1][k] for k in ("n", "accuracy", "balanced_accuracy", "kappa")},
        }
    full = {"summary": summary, "report": report, "baseline_report": baseline and baseline[1]}
    (out / f"report_{name}.json").write_text(json.dumps(full, indent=2))
    print_report(name, report, baseline)
    cascade = cascade_summary(judge)
    if cascade:
        summary["cascade"] = cascade
    print(f"disagreements: {disagreements}")
    print(json.dumps(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = program("calib-judge", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser("eval", help="score a judge against human-labelled responses")
    evaluate.add_argument(
        "overrides",
        nargs="*",
        help="judge=<name> labels=<csv or folder> [judge.key=value ...] [baseline=<name>|null] "
        "[refusal_labels=[REFUSE,WARN]] [out=<folder>]",
    )
    args = parser.parse_args(argv)
    return run_program("calib-judge", lambda: _eval_exit_code(args.overrides))


def _eval_exit_code(overrides: Sequence[str]) -> int:
    secrets = override_secrets(overrides)
    if secrets:  # refused before anything is composed or written, never echoed
        raise ConfigError(secret_override_message(secrets, "your shell history"))
    eval_command(overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
