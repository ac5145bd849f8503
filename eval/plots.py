"""PNG plots of the safety-utility trade-off (matplotlib, no display needed).

- :func:`tradeoff_plot`: one point per run on two "higher is better" axes (SRA_s vs SRA_u,
  or utility vs safety mean), confidence intervals as error bars, and the Pareto frontier
  (runs no other run beats on both axes) joined and ringed.
- :func:`category_bars`: SRA_u and SRA_s per category, one bar per run.
- :func:`steering_layer_plot`: a steering run's per-layer scores (``method/layer_scores.json``).
- :func:`steering_selection_plot`: the effect of each candidate layer (``method/selection.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

Interval = tuple[float, float] | None


@dataclass(frozen=True)
class Point:
    """One run on a trade-off plot; values are shares in [0, 1], intervals optional."""

    label: str
    x: float
    y: float
    x_ci: Interval = None
    y_ci: Interval = None


def save_figure(fig, path: Path, dpi: int | None = None) -> Path:
    """Lay out, write (creating the folder) and close one figure; returns ``path``."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point matches or beats on both axes (maximising).

    Exact duplicates are all kept: neither beats the other.
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox >= x and oy >= y) and (ox > x or oy > y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _error(value: float, interval: Interval) -> list[list[float]] | None:
    if not interval or interval[0] is None or interval[1] is None:
        return None
    low, high = interval
    return [[100 * max(0.0, value - low)], [100 * max(0.0, high - value)]]


def _coincident(points: Sequence[Point]) -> dict[tuple[float, float], list[str]]:
    """Labels grouped by position (to 0.1 point), so runs on the same spot share one note."""
    groups: dict[tuple[float, float], list[str]] = {}
    for p in points:
        groups.setdefault((round(100 * p.x, 1), round(100 * p.y, 1)), []).append(p.label)
    return groups


def _limits(values: Sequence[float]) -> tuple[float, float]:
    """Axis range in percent around the values (at least 20 points wide), within -3..103."""
    low, high = 100 * min(values), 100 * max(values)
    pad = max(5.0, 0.15 * (high - low))
    low, high = low - pad, high + pad
    if high - low < 20:
        middle = (low + high) / 2
        low, high = middle - 10, middle + 10
    return max(-3.0, low), min(103.0, high)


def tradeoff_plot(
    points: Sequence[Point], x_label: str, y_label: str, title: str, path: Path
) -> Path:
    """Scatter ``points`` (in percent), mark the Pareto frontier, save as PNG at ``path``."""
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    front = set(pareto_front([(p.x, p.y) for p in points]))
    colours = plt.get_cmap("tab10")
    for i, p in enumerate(points):
        colour = colours(i % 10)
        ax.errorbar(
            100 * p.x,
            100 * p.y,
            xerr=_error(p.x, p.x_ci),
            yerr=_error(p.y, p.y_ci),
            fmt="o",
            color=colour,
            ecolor=colour,
            alpha=0.9,
            capsize=3,
            markersize=7,
            label=p.label,
        )
    x_low, x_high = _limits([v for p in points for v in (p.x, *(p.x_ci or ()))])
    y_low, y_high = _limits([v for p in points for v in (p.y, *(p.y_ci or ()))])
    for (x, y), names in _coincident(points).items():
        right_half = x > (x_low + x_high) / 2  # write the note on the side with room
        ax.annotate(
            ", ".join(names),
            (x, y),
            textcoords="offset points",
            xytext=(-8, 6) if right_half else (8, 6),
            ha="right" if right_half else "left",
            fontsize=8,
        )
    if front:
        ordered = sorted((points[i] for i in front), key=lambda p: p.x)
        ax.plot(
            [100 * p.x for p in ordered],
            [100 * p.y for p in ordered],
            "--",
            color="black",
            linewidth=1,
            label="Pareto frontier",
        )
        ax.scatter(
            [100 * p.x for p in ordered],
            [100 * p.y for p in ordered],
            s=190,
            facecolors="none",
            edgecolors="black",
            linewidths=1.2,
        )
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low, y_high)
    ax.set_xlabel(f"{x_label} (%)")
    ax.set_ylabel(f"{y_label} (%)")
    ax.set_title(title, fontsize=10)
    ax.annotate(
        "better",
        xy=(0.98, 0.98),
        xytext=(0.86, 0.86),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "->"},
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def category_bars(
    series: Mapping[str, Mapping[str, Mapping[str, float | None]]], path: Path
) -> Path:
    """Bars of SRA_u and SRA_s per category; ``series`` maps run label -> category -> metrics."""
    categories = sorted({c for by_category in series.values() for c in by_category})
    labels = list(series)
    fig, axes = plt.subplots(
        2, 1, figsize=(max(6.4, 1.1 * len(categories) + 2), 6.4), dpi=110, sharex=True
    )
    width = 0.8 / max(1, len(labels))
    colours = plt.get_cmap("tab10")
    for ax, key, name in (
        (axes[0], "sra_u", "SRA_u (unsafe refused/warned)"),
        (axes[1], "sra_s", "SRA_s (safe answered)"),
    ):
        for k, label in enumerate(labels):
            values = [series[label].get(c, {}).get(key) for c in categories]
            heights = [100 * v if v is not None else 0.0 for v in values]
            offsets = [i - 0.4 + width * (k + 0.5) for i in range(len(categories))]
            bars = ax.bar(offsets, heights, width=width, color=colours(k % 10), label=label)
            if len(categories) * len(labels) <= 48:  # few bars: print each value
                notes = [
                    "n/a" if v is None else f"{h:.0f}" for h, v in zip(heights, values, strict=True)
                ]
                ax.bar_label(bars, labels=notes, fontsize=6, padding=1)
        ax.set_ylabel(f"{name} (%)", fontsize=9)
        ax.set_ylim(0, 112)  # room for the value notes above 100
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(categories)))
    axes[1].set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
    axes[0].legend(fontsize=7, ncol=min(4, len(labels)), loc="upper right")
    axes[0].set_title("Safety by category", fontsize=10)
    return save_figure(fig, path)


def run_plots(metrics: Mapping, folder: Path, method_dir: Path | None = None) -> list[Path]:
    """A run's own plots: safety by category, the run beside its no-method baseline, and what
    the method wrote about its own fitting (steering: ``layer_scores.json``)."""
    method = str(metrics["run"]["method"])
    safety = metrics["safety"]
    written = []
    if safety.get("by_category"):
        written.append(category_bars({method: safety["by_category"]}, folder / "by_category.png"))
    base = (metrics.get("deltas") or {}).get("baseline") or {}
    pairs = (
        [("none (baseline)", base), (method, safety)] if method != "none" else [(method, safety)]
    )
    points = [
        Point(
            label,
            figures["sra_s"],
            figures["sra_u"],
            figures_ci(figures, "sra_s"),
            figures_ci(figures, "sra_u"),
        )
        for label, figures in pairs
        if figures.get("sra_s") is not None and figures.get("sra_u") is not None
    ]
    if points:
        title = f"{metrics['run']['model']}: {method} against the model with no method"
        written.append(tradeoff_plot(points, "SRA_s", "SRA_u", title, folder / "sra_tradeoff.png"))
    layer_scores = None if method_dir is None else method_dir / "layer_scores.json"
    if layer_scores is not None and layer_scores.is_file():
        report = json.loads(layer_scores.read_text(encoding="utf-8"))
        written.append(steering_layer_plot(report, folder / "steering_layers.png"))
    selection = None if method_dir is None else method_dir / "selection.json"
    if selection is not None and selection.is_file():
        report = json.loads(selection.read_text(encoding="utf-8"))
        if report.get("layer", {}).get("candidates"):
            written.append(
                steering_selection_plot(report["layer"], folder / "steering_selection.png")
            )
    return written


def steering_selection_plot(report: Mapping, path: Path) -> Path:
    """Per candidate layer (one line per post-instruction position): the refusal score under
    ablation (unsafe prompts) and under addition (safe prompts), and the KL of ablation on
    the safe prompts (right axis); the chosen candidate marked."""
    rows = report["candidates"]
    figure, axes = plt.subplots(figsize=(7, 3.6))
    kl_axes = axes.twinx()
    for position in sorted({row["position"] for row in rows}):
        mine = sorted((r for r in rows if r["position"] == position), key=lambda r: r["layer"])
        layers = [r["layer"] for r in mine]
        axes.plot(layers, [r["ablation_score"] for r in mine], marker="o", color="C0", alpha=0.8)
        axes.plot(layers, [r["actadd_score"] for r in mine], marker="^", color="C1", alpha=0.8)
        kl_axes.plot(layers, [r["kl"] for r in mine], ls=":", marker=".", color="C2", alpha=0.8)
    axes.plot([], [], marker="o", color="C0", label="refusal score, ablation (unsafe)")
    axes.plot([], [], marker="^", color="C1", label="refusal score, addition (safe)")
    axes.plot([], [], ls=":", marker=".", color="C2", label="KL of ablation (safe, right)")
    baseline = report.get("baseline") or {}
    if baseline.get("harmful_score") is not None:
        axes.axhline(baseline["harmful_score"], color="C0", lw=0.6, ls="--")
        axes.axhline(baseline["harmless_score"], color="C1", lw=0.6, ls="--")
    kl_axes.axhline(report["kl_max"], color="C2", lw=0.6, ls="--")
    axes.axvline(report["layer"], color="C3", lw=1, label=f"chosen layer {report['layer']}")
    axes.set(xlabel="decoder layer (direction source and steered input)", ylabel="refusal log-odds")
    kl_axes.set_ylabel("KL")
    axes.set_title("Steering: effect of each candidate (validation part)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=7, loc="best")
    return save_figure(figure, path, dpi=120)


def steering_layer_plot(report: Mapping, path: Path) -> Path:
    """Per decoder layer: held-out AUROC and τ's balanced accuracy; the chosen layer marked."""
    rows = report["layers"]
    layers = [row["layer"] for row in rows]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    auroc = [math.nan if row["auroc"] is None else row["auroc"] for row in rows]
    axes.plot(layers, auroc, marker="o", label="held-out AUROC")
    accuracy = [row["tau_balanced_accuracy"] for row in rows]
    axes.plot(layers, accuracy, marker=".", ls="--", label="τ balanced acc.")
    excluded = [row["layer"] for row in rows if not row["candidate"]]
    if excluded:
        axes.axvspan(min(excluded) - 0.5, max(excluded) + 0.5, color="0.9", label="not a candidate")
    chosen = report["chosen_layer"]
    axes.axvline(chosen, color="C3", lw=1, label=f"chosen layer {chosen}")
    axes.axhline(0.5, color="0.5", lw=0.5)
    axes.set(xlabel="decoder layer", ylabel="score", ylim=(0, 1.02))
    axes.set_title("Steering direction per layer")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=7, loc="lower right")
    return save_figure(figure, path, dpi=120)


def figures_ci(figures: Mapping, key: str) -> Interval:
    interval = (figures.get("ci") or {}).get(key)
    return tuple(interval) if interval and interval[0] is not None else None
