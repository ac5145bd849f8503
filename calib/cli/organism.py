"""``calib-organism``: train the model organism, or check that the shipped one is current.

calib-organism train                          # retrain the shipped weights (in the package)
calib-organism train --out /tmp/organism      # elsewhere; use it with model.id=/tmp/organism
calib-organism train model.organism.epochs=2  # any model.organism.* override
calib-organism check                          # does the shipped card match the current corpus hash?
calib-organism table outputs/multirun/<d>/<t> # the measured table (markdown) of a run folder's runs

The settings are ``model.organism`` of ``conf/model/organism.yaml``; the system instruction
it learns to obey is the ``calibrated`` preset of ``conf/method/prompting.yaml``, and the
refusals its demonstrations show are few-shot's defaults (:mod:`calib.methods.refusals`),
so that ``method=prompting`` and ``method=few_shot`` reach it exactly as trained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from calib.cli.common import compose_config, program, run_program
from calib.methods.refusals import DEFAULT_REFUSAL_TEMPLATES
from calib.model.organism import WEIGHTS_DIR
from train.organism import CARD_FILE, OrganismSettings, corpus_hash, train_organism

RETRAIN = "retrain with `calib-organism train` (about 8 minutes on 2 CPU cores)"


def organism_settings(overrides: Sequence[str] = ()) -> OrganismSettings:
    """The training settings as ``conf/`` (with these overrides) gives them."""
    cfg = compose_config(["model=organism", "method=prompting", *overrides])
    organism = OmegaConf.to_container(cfg.model.organism, resolve=True)
    instruction = cfg.method.presets.calibrated
    return OrganismSettings.from_config(organism, instruction, DEFAULT_REFUSAL_TEMPLATES)


def stale_reason(folder: Path = WEIGHTS_DIR, overrides: Sequence[str] = ()) -> str | None:
    """Why the weights in ``folder`` do not match the current world and config, or None."""
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        return f"{card_path} is missing: {RETRAIN}"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    current = corpus_hash(organism_settings(overrides))
    if card.get("corpus_hash") != current:
        return (
            f"the organism in {folder} was trained on corpus {card.get('corpus_hash')}, but the "
            f"world and conf/model/organism.yaml now give {current}: {RETRAIN}"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = program("calib-organism", __doc__)
    parser.add_argument("command", choices=["train", "check", "table"])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to write weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides", nargs="*", help="model.organism.* overrides (key=value); table: run folders"
    )
    # intermixed: `train --out DIR key=value` (overrides after an option) parses too
    args = parser.parse_intermixed_args(argv)
    return run_program("calib-organism", lambda: _command(args))


def measured_table(folders: Sequence[Path]) -> str:
    """A markdown table of the runs under ``folders`` (each ``metrics.json``), in order."""
    rows = [
        "| method | SRA_u | SRA_s | mean | Δ mean | utility | Δ utility |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    paths = sorted({p for f in folders for p in Path(f).rglob("metrics.json")})
    if not paths:
        raise FileNotFoundError(f"no metrics.json under {', '.join(map(str, folders))}")
    for path in paths:
        m = json.loads(path.read_text(encoding="utf-8"))
        safety, deltas = m["safety"], m.get("deltas", {})
        name = m["run"]["method"] + _mode(path)
        utility = m.get("utility", {}).get("score")
        cells = [safety["sra_u"], safety["sra_s"], safety["mean"], deltas.get("mean"), utility,
                 deltas.get("utility")]  # fmt: skip
        signed = [False, False, False, True, False, True]
        rows.append(f"| {name} | " + " | ".join(map(_pct, cells, signed)) + " |")
    return "\n".join(rows)


def _mode(metrics_path: Path) -> str:
    config = metrics_path.parent / "config.yaml"
    cfg = OmegaConf.load(config) if config.is_file() else None
    mode = cfg.method.get("mode") if cfg is not None else None
    return f" ({mode})" if mode else ""


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _command(args) -> int:
    if args.command == "table":
        print(measured_table([Path(p) for p in args.overrides]))
        return 0
    if args.command == "check":
        reason = stale_reason(args.out, args.overrides)
        print(
            reason
            or f"{args.out}: current (corpus {corpus_hash(organism_settings(args.overrides))})"
        )
        return 1 if reason else 0
    card = train_organism(
        organism_settings(args.overrides), args.out, progress=not args.no_progress
    )
    print(
        f"organism trained in {card['train_seconds']} s on {card['torch_threads']} thread(s): "
        f"{card['parameters']:,} parameters, {card['weights_bytes'] / 1e6:.1f} MB of weights, "
        f"final loss {card['loss_curve'][-1]['loss']}, corpus {card['corpus_hash']} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
