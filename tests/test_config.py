"""Every option of every config group composes, resolves, and points at importable code."""

from __future__ import annotations

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from calib.cli.common import compose_config, config_dir

CONF = config_dir()
GROUPS = ["model", "method", "data", "utility", "judge", "logger", "paths"]


def options() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def compose_with(*overrides: str):
    return compose_config(overrides=list(overrides))


def test_defaults_compose():
    cfg = compose_with()
    assert cfg.model.organism is not None, "the default model must be the shipped organism"
    assert cfg.data._target_ == "eval.data.organism.load_organism"
    assert cfg.utility._target_ == "eval.utility.organism.OrganismUtility"
    assert cfg.seed == 0


@pytest.mark.parametrize(("group", "option"), options(), ids=lambda x: str(x))
def test_every_option_composes(group: str, option: str):
    cfg = compose_with(f"{group}={option}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    node = resolved[group]
    target = node.get("_target_") if isinstance(node, dict) else None
    if target:
        assert callable(get_object(target)), (
            f"{group}/{option}.yaml: _target_ {target} is not callable"
        )


@pytest.mark.parametrize(("group", "option"), options(), ids=lambda x: str(x))
def test_every_option_file_starts_with_a_launch_comment(group: str, option: str):
    first = (CONF / group / f"{option}.yaml").read_text().splitlines()[0]
    assert first.startswith("# Launch:"), (
        f"conf/{group}/{option}.yaml should start with '# Launch: ...'"
    )


def test_unknown_option_lists_the_choices():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Available options"):
        compose_with("method=no_such_method")
