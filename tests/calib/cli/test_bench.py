"""``calib-bench --quick`` runs end to end; its summary's ratios are those of its own timings.

No speed is asserted (the machines are noisy): the test checks that what is printed is what
was measured.
"""

from __future__ import annotations

import json

import pytest

from calib.cli.bench import main


@pytest.mark.slow
def test_quick_bench_prints_table_and_json_last(tmp_path, capsys):
    assert main(["--quick", f"paths.cache_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    timings = summary["models"][summary["model"]]
    assert summary["model"] == "tiny" and timings["samples"] == 6
    assert summary["batched_speedup"] == round(timings["one_at_a_time_s"] / timings["batched_s"], 3)
    assert summary["cache_speedup"] == round(timings["first_run_s"] / timings["cached_run_s"], 1)
    assert summary["steering_overhead"] == round(
        timings["steering_on_s"] / timings["steering_off_s"], 4
    )
    by_mode = summary["steering_overhead_by_mode"]
    assert set(by_mode) == {"add", "ablate", "conditional"}
    for mode, ratio in by_mode.items():
        on = timings["steering_on_s_by_mode"][mode]
        assert ratio == round(on / timings["steering_off_s"], 4), mode
    assert summary["steering_overhead"] == by_mode["add"]
    assert all(timings[k] > 0 for k in ("one_at_a_time_s", "batched_s", "cached_run_s"))
    assert 0 < summary["peak_rss_mb"] < 24 * 1024
    table = "\n".join(lines[:-1])
    assert f"{timings['batched_speedup']:.2f}x" in table and "tiny-llava" in table
    assert "overhead, mode=ablate" in table and "fixed length" in table


def test_fixed_length_generation_writes_exactly_max_new_tokens(tiny_llava):
    """What the steering timing relies on: min_new_tokens = max_new_tokens fixes the length."""
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
    batch = tiny_llava.encode([conversation])
    free = tiny_llava.model.generate(**batch, max_new_tokens=12, do_sample=False)
    fixed = tiny_llava.model.generate(
        **batch, max_new_tokens=12, min_new_tokens=12, do_sample=False
    )
    prompt = batch["input_ids"].shape[1]
    assert fixed.shape[1] - prompt == 12
    assert free.shape[1] - prompt <= 12
