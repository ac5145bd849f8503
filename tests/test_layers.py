"""The dependency rule of the house (docs/architecture.md), checked on every import statement.

- the core (``calib`` minus ``methods``, ``pipeline`` and ``cli``) imports neither ``eval``
  nor ``train``, nor the methods, the pipeline or the programs built on it;
- ``train`` and ``eval`` import only the core;
- ``calib.methods`` import the core and ``train`` (a method wires the fitting it needs),
  never ``eval`` (a judge or utility set reaches a method as an object built from config);
- ``calib.pipeline`` and ``calib.cli`` sit on top and may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def layer(module: str) -> str:
    """The room a module belongs to: core, methods, top, train or eval."""
    if module.startswith(("calib.pipeline", "calib.cli")):
        return "top"
    if module.startswith("calib.methods"):
        return "methods"
    return module.split(".")[0] if module.startswith(("train", "eval")) else "core"


ALLOWED = {
    "core": {"core"},
    "train": {"core", "train"},
    "eval": {"core", "eval"},
    "methods": {"core", "train", "methods"},
    "top": {"core", "train", "eval", "methods", "top"},
}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in ("calib", "train", "eval"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported(path: Path) -> set[str]:
    """Every project module an ``import`` statement of the file names (lazy ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("calib", "train", "eval")}


MODULES = project_modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_what_its_layer_may(module):
    own = layer(module)
    wrong = sorted(n for n in imported(MODULES[module]) if layer(n) not in ALLOWED[own])
    assert not wrong, f"{module} ({own}) imports {wrong}; allowed layers: {sorted(ALLOWED[own])}"


def test_the_rule_sees_a_violation():
    """The checker itself: an eval import inside the core is caught."""
    assert layer("calib.model.vlm") == "core" and "eval" not in ALLOWED["core"]
    assert layer("calib.methods.lora") == "methods" and "eval" not in ALLOWED["methods"]
    assert {layer(m) for m in MODULES} == {"core", "methods", "top", "train", "eval"}
