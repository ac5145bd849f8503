"""Leak-free grouping, stratified limits and grouped, stratified calibration/evaluation splits.

* ``link_groups`` merges samples into one group whenever they share their group or any
  *link key* (a normalised prompt text, a twin key, an image file...), with a union-find, so
  that a query, every copy of its text and its safe/unsafe twin end up in one group.
* ``stratified_limit`` keeps ``limit`` samples, spread over the strata in proportion.
* ``grouped_split`` puts whole groups into the calibration split, choosing them so that each
  stratum (category, label, condition) gets about ``fraction`` of its samples there.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from calib.types import Sample

Stratum = tuple[str, str, str]


def normalise_text(text: str) -> str:
    """Compatibility-normalised, case-folded, punctuation-free, single-spaced text.

    Two prompts that differ only in case, spacing, full-width or curly punctuation
    ("Why？" / "why?") normalise to the same key.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", folded).split())


class UnionFind:
    """Disjoint sets over hashable items."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: Any, b: Any) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a


def link_groups(
    samples: Sequence[Sample], link_keys: Callable[[Sample], Iterable[str]]
) -> list[Sample]:
    """Samples with ``group`` replaced by their connected component's name.

    Two samples are connected when they share ``group`` or any key of ``link_keys(sample)``.
    A component is named after the smallest original group in it, so names are stable.
    """
    uf = UnionFind()
    for sample in samples:
        group_node = ("group", sample.group)
        uf.find(group_node)
        for key in link_keys(sample):
            uf.union(group_node, ("key", key))
    members: dict[Any, list[str]] = defaultdict(list)
    for sample in samples:
        members[uf.find(("group", sample.group))].append(sample.group)
    name = {root: min(groups) for root, groups in members.items()}
    return [replace(s, group=name[uf.find(("group", s.group))]) for s in samples]


def stratum(sample: Sample) -> Stratum:
    """What splits and limits balance: (category, label, condition)."""
    return (sample.category, str(sample.label), sample.condition)


def stratified_limit(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    """``limit`` samples drawn without replacement, in proportion to each stratum.

    Quotas are floors of the proportional share, the remainder going to the strata with the
    largest fractional parts (ties broken by a seeded draw). Input order is kept.
    """
    if limit is None or limit >= len(samples):
        return list(samples)
    rng = random.Random(seed)
    by_stratum: dict[Stratum, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_stratum[stratum(sample)].append(index)
    strata = sorted(by_stratum)
    shares = {s: limit * len(by_stratum[s]) / len(samples) for s in strata}
    quota = {s: int(shares[s]) for s in strata}
    tie_break = {s: rng.random() for s in strata}
    leftover = limit - sum(quota.values())
    for s in sorted(strata, key=lambda s: (-(shares[s] - quota[s]), tie_break[s]))[:leftover]:
        quota[s] += 1
    kept: list[int] = []
    for s in strata:
        kept.extend(rng.sample(by_stratum[s], quota[s]))
    return [samples[i] for i in sorted(kept)]


def grouped_split(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(calibration, evaluation): whole groups on one side, strata near ``fraction``.

    Greedy, best first: while some group brings the per-stratum calibration counts closer
    to their targets (``fraction`` x stratum size, in L1 distance), take the one that helps
    most. Then, while the calibration split is below ``round(fraction x n)`` samples, take
    the group that gets nearer that size at the least cost to the strata (small sets whose
    strata targets are below one sample fill up here). Ties go to the group whose strata are
    least filled so far, then to a seeded random order.
    """
    if fraction <= 0 or not samples:
        return [], list(samples)
    rng = random.Random(seed)
    group_counts: dict[str, Counter[Stratum]] = defaultdict(Counter)
    for sample in samples:
        group_counts[sample.group][stratum(sample)] += 1
    groups = sorted(group_counts)
    rank = dict(zip(groups, rng.sample(range(len(groups)), len(groups)), strict=True))
    totals: Counter[Stratum] = Counter(stratum(s) for s in samples)
    target = {s: fraction * n for s, n in totals.items()}
    target_size = round(fraction * len(samples))
    taken: Counter[Stratum] = Counter()
    size = 0
    chosen: set[str] = set()

    def strata_gain(group: str) -> float:
        return sum(
            abs(taken[s] + n - target[s]) - abs(taken[s] - target[s])
            for s, n in group_counts[group].items()
        )

    def size_gain(group: str) -> int:
        n = sum(group_counts[group].values())
        return abs(size + n - target_size) - abs(size - target_size)

    def fill(group: str) -> float:
        """Largest share of a stratum this group's strata would reach (prefer the emptiest)."""
        return max((taken[s] + n) / totals[s] for s, n in group_counts[group].items())

    def take(group: str) -> None:
        nonlocal size
        chosen.add(group)
        taken.update(group_counts[group])
        size += sum(group_counts[group].values())

    while True:  # strata first
        scored = [(strata_gain(g), fill(g), rank[g], g) for g in groups if g not in chosen]
        best = min((item for item in scored if item[0] < 0), default=None)
        if best is None:
            break
        take(best[-1])
    while True:  # then the overall size
        scored = [
            (strata_gain(g) + size_gain(g), fill(g), rank[g], g)
            for g in groups
            if g not in chosen and size_gain(g) < 0
        ]
        if not scored:
            break
        take(min(scored)[-1])
    calibration = [s for s in samples if s.group in chosen]
    evaluation = [s for s in samples if s.group not in chosen]
    return calibration, evaluation


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    """JSON-able counts: size, groups, per label, per condition, per category and label."""
    by_category: dict[str, dict[str, int]] = defaultdict(dict)
    for (category, label), n in sorted(
        Counter((s.category, str(s.label)) for s in samples).items()
    ):
        by_category[category][label] = n
    return {
        "size": len(samples),
        "groups": len({s.group for s in samples}),
        "by_label": dict(sorted(Counter(str(s.label) for s in samples).items())),
        "by_condition": dict(sorted(Counter(s.condition for s in samples).items())),
        "by_category": dict(by_category),
    }
