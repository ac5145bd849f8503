"""The shipped organism: present, small, loadable, and trained on the current world."""

from __future__ import annotations

import json

from calib.cli.common import compose_config
from calib.cli.organism import stale_reason
from calib.model import load_vlm
from calib.model.organism import WEIGHTS_DIR
from train.organism import CARD_FILE


def test_shipped_card_matches_the_current_world_and_config():
    reason = stale_reason(WEIGHTS_DIR)
    assert reason is None, reason  # says "retrain with `calib-organism train`"


def test_shipped_weights_are_a_few_megabytes_and_load_as_the_default_model(tmp_path):
    card = json.loads((WEIGHTS_DIR / CARD_FILE).read_text())
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert size == card["weights_bytes"] and size < 10_000_000
    cfg = compose_config(["model.device=cpu", f"paths.cache_dir={tmp_path}"])
    vlm = load_vlm(cfg.model, cfg.paths.cache_dir)
    assert vlm.identity.startswith("local:") and vlm.supports_system_role
    assert sum(p.numel() for p in vlm.model.parameters()) == card["parameters"]


def test_a_stale_card_names_the_command_that_retrains(tmp_path):
    card = json.loads((WEIGHTS_DIR / CARD_FILE).read_text())
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "corpus_hash": "0" * 16}))
    reason = stale_reason(tmp_path)
    assert reason is not None and "calib-organism train" in reason
    assert "missing" in stale_reason(tmp_path / "nowhere")
