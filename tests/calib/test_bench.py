"""``calib-bench --quick`` runs end to end and ends with its JSON summary (no speed asserted)."""

from __future__ import annotations

import json

import pytest

from calib.bench import main


@pytest.mark.slow
def test_quick_bench_prints_table_and_json_last(tmp_path, capsys):
    assert main(["--quick", f"paths.cache_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("batched_speedup", "cache_speedup", "steering_overhead", "peak_rss_mb"):
        assert key in summary
    assert summary["batched_speedup"] > 0 and summary["cache_speedup"] > 0
    assert summary["peak_rss_mb"] > 0
    overhead = summary["steering_overhead"]
    assert overhead is None or overhead > 0
    table = "\n".join(lines[:-1])
    assert "batched speedup" in table and "cache speedup" in table and "tiny-llava" in table
