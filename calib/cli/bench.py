"""``calib-bench``: what batching, the generation cache and steering cost or save, measured.

For each model (default: the embedded ``tiny`` and the larger random ``tiny_bench``), on the
same evaluation samples of the configured data (default: the embedded sample), it times:

* one prompt at a time (how the benchmark authors' scripts generate) vs batches of
  ``generation.batch_size`` (length-sorted, as a run does);
* a first run that fills a fresh generation cache vs the same run again, served by it;
* steering off vs on, each mode of ``--steering-modes`` (a fixed random vector steered at the
  middle layer's input, ``conf/method/steering.yaml`` otherwise), with a **fixed number of new
  tokens** (``min_new_tokens = max_new_tokens``) and no cache, so the ratio measures the hooks
  and not outputs of different lengths.

It prints a table, then as its last line one JSON object with ``batched_speedup``,
``cache_speedup``, ``steering_overhead`` (the first steering mode) and
``steering_overhead_by_mode`` (of the last model listed) and ``peak_rss_mb``.
The device comes from the model config, so the same command measures a GPU::

    calib-bench                                        # tiny + tiny_bench, 32 samples
    calib-bench --quick                                # a smoke run (CI): tiny, few tokens
    calib-bench --models tiny_bench model.device=cuda generation.max_new_tokens=64
    calib-bench --models tiny_bench,llava-1.5-7b model.device=cuda   # a real checkpoint too
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from calib.cli.common import compose_config, program, run_program
from calib.generation.cache import GenerationCache
from calib.generation.generate import generate
from calib.hashing import forget_image_digests
from calib.methods.none import NoMethod
from calib.model import VLM
from calib.pipeline import decoding_settings, load_data, load_model
from calib.types import CalibrationMethod, Sample
from train.steering import SteeringVectors

QUICK_OVERRIDES = ["generation.max_new_tokens=4"]


def model_config(model: str, overrides: Sequence[str]) -> DictConfig:
    return compose_config([f"model={model}", *overrides])


def spread(samples: Sequence[Sample], count: int) -> list[Sample]:
    """``count`` samples taken evenly across the list (so every condition shows up)."""
    step = max(1, len(samples) // count)
    return list(samples[::step][:count])


def timed(call: Callable[..., Any], *args: Any) -> float:
    """Wall-clock seconds of ``call(*args)``."""
    start = time.perf_counter()
    call(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def steering_method(
    model: str, overrides: Sequence[str], vlm: VLM, mode: str = "add"
) -> CalibrationMethod:
    """SteeringMethod from conf/method/steering.yaml (``mode`` set) with fixed random vectors
    at the middle layer (conditional: the condition read there too, τ = -1, always met)."""

    steering_cfg = model_config(model, [*overrides, "method=steering"]).method
    method = instantiate(
        steering_cfg, layer=vlm.num_layers // 2, mode=mode, judge=None, _convert_="all"
    )
    generator = torch.Generator().manual_seed(0)
    shape = (1, vlm.num_layers, vlm.hidden_size)
    directions = torch.randn(shape, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    zeros = torch.zeros(vlm.num_layers)
    vectors = SteeringVectors(
        directions=directions,
        mean_norms=torch.ones(vlm.num_layers),
        auroc=zeros + 0.5,
        thresholds=zeros,
        threshold_accuracy=zeros,
        mean_diff=directions,
        condition=torch.randn(shape[1:], generator=generator),
        meta={"source": "calib-bench fixed random vector"},
    )
    condition = {"layer": vlm.num_layers // 2, "tau": -1.0, "above": True}
    method.use_vectors(vectors, vlm.num_layers, condition=condition)
    return method


def bench_model(
    model: str,
    overrides: Sequence[str],
    n_samples: int,
    repeats: int,
    modes: Sequence[str] = ("add",),
) -> dict:
    """Every timing for one model (seconds) and the ratios they give."""
    cfg = model_config(model, overrides)
    vlm = load_model(cfg)
    samples = spread(load_data(cfg).evaluation, n_samples)
    decoding = decoding_settings(cfg)
    # Steering is timed at a fixed length: every response gets exactly max_new_tokens tokens.
    fixed = {**decoding, "min_new_tokens": decoding["max_new_tokens"]}
    batch_size = cfg.generation.batch_size

    def run(
        method: CalibrationMethod,
        size: int,
        cache: GenerationCache | None = None,
        settings: dict | None = None,
    ):
        return generate(
            vlm,
            method,
            samples,
            batch_size=size,
            decoding=settings or decoding,
            cache=cache,
            progress=False,
        )

    none = NoMethod()
    steerings = {mode: steering_method(model, overrides, vlm, mode) for mode in modes}
    run(none, batch_size)  # warm-up: first-call allocations and lazy initialisation
    times: dict[str, list[float]] = {
        "one": [],
        "batched": [],
        "fixed_off": [],
        "first": [],
        "cached": [],
        **{f"fixed_{mode}": [] for mode in modes},
    }
    for _ in range(repeats):  # interleaved and best-of, so load from elsewhere hits all alike
        times["one"].append(timed(run, none, 1))
        times["batched"].append(timed(run, none, batch_size))
        for mode, steering in [("off", none), *steerings.items()]:
            times[f"fixed_{mode}"].append(timed(run, steering, batch_size, None, fixed))
        with tempfile.TemporaryDirectory(prefix="calib-bench-") as folder:
            cache = GenerationCache.in_dir(folder)
            times["first"].append(timed(run, none, batch_size, cache))
            forget_image_digests()  # as in a new process: image files are hashed again
            times["cached"].append(timed(run, none, batch_size, cache))
            cache.close()
    best = {name: min(values) if values else None for name, values in times.items()}
    result: dict[str, Any] = {
        "name": vlm.name,
        "params_m": round(sum(p.numel() for p in vlm.model.parameters()) / 1e6, 2),
        "device": str(vlm.device),
        "samples": len(samples),
        "batch_size": batch_size,
        "max_new_tokens": decoding["max_new_tokens"],
        "repeats": repeats,
        "one_at_a_time_s": best["one"],
        "batched_s": best["batched"],
        "first_run_s": best["first"],
        "cached_run_s": best["cached"],
        "steering_off_s": best["fixed_off"],
        "steering_on_s": best[f"fixed_{modes[0]}"] if modes else None,
        "steering_on_s_by_mode": {mode: best[f"fixed_{mode}"] for mode in modes},
    }
    result["batched_speedup"] = result["one_at_a_time_s"] / result["batched_s"]
    result["cache_speedup"] = result["first_run_s"] / result["cached_run_s"]
    result["steering_overhead_by_mode"] = {
        mode: best[f"fixed_{mode}"] / best["fixed_off"] for mode in modes
    }
    result["steering_overhead"] = (
        result["steering_overhead_by_mode"].get(modes[0]) if modes else None
    )
    return result


ROWS = [
    ("parameters (millions)", "params_m", "{:.2f}"),
    ("device", "device", "{}"),
    ("samples x new tokens", None, None),
    ("one at a time (s)", "one_at_a_time_s", "{:.2f}"),
    ("batched (s)", "batched_s", "{:.2f}"),
    ("  batched speedup", "batched_speedup", "{:.2f}x"),
    ("first run, filling the cache (s)", "first_run_s", "{:.2f}"),
    ("re-run from the cache (s)", "cached_run_s", "{:.3f}"),
    ("  cache speedup", "cache_speedup", "{:.0f}x"),
    ("steering off, fixed length (s)", "steering_off_s", "{:.2f}"),
    ("steering on, fixed length (s)", "steering_on_s", "{:.2f}"),
    ("  steering overhead", "steering_overhead", "{:.3f}"),
]


def table(results: Sequence[dict]) -> str:
    header = ["", *(f"{r['name']} (batch {r['batch_size']})" for r in results)]
    lines = [header]
    modes = list(results[0].get("steering_overhead_by_mode", {})) if results else []
    extra = [
        (f"  overhead, mode={mode}", ("steering_overhead_by_mode", mode), "{:.3f}")
        for mode in modes
    ]
    for title, key, fmt in [*ROWS, *extra]:
        cells = []
        for r in results:
            if isinstance(key, tuple):
                cells.append(fmt.format(r[key[0]][key[1]]))
            elif key is None:
                cells.append(f"{r['samples']} x {r['max_new_tokens']}")
            elif r.get(key) is None:
                cells.append("n/a")
            else:
                cells.append(fmt.format(r[key]))
        lines.append([title, *cells])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = program("calib-bench", __doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every model (key=value)")
    parser.add_argument(
        "--models",
        default="tiny,tiny_bench",
        help="comma-separated conf/model options; the summary's ratios are the last one's",
    )
    parser.add_argument(
        "--samples", type=int, default=32, help="evaluation samples per measurement"
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds of measurements (best of)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny only, 6 samples, 4 new tokens"
    )
    parser.add_argument(
        "--steering-modes",
        default="add,ablate,conditional",
        help="comma-separated method.mode values timed against no steering (fixed length)",
    )
    args = parser.parse_args(argv)
    return run_program("calib-bench", lambda: _bench_command(args))


def _bench_command(args) -> int:
    models, overrides = [m for m in args.models.split(",") if m], list(args.overrides)
    n_samples, repeats = args.samples, args.repeats
    if args.quick:
        models, overrides, n_samples, repeats = ["tiny"], [*QUICK_OVERRIDES, *overrides], 6, 1
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    results = []
    for model in models:
        print(f"benchmarking model={model} ...", file=sys.stderr, flush=True)
        modes = [m for m in args.steering_modes.split(",") if m]
        results.append(bench_model(model, overrides, n_samples, repeats, modes))
    print(table(results))
    headline = results[-1]
    summary = {
        "batched_speedup": round(headline["batched_speedup"], 3),
        "cache_speedup": round(headline["cache_speedup"], 1),
        "steering_overhead": None
        if headline["steering_overhead"] is None
        else round(headline["steering_overhead"], 4),
        "steering_overhead_by_mode": {
            mode: round(ratio, 4) for mode, ratio in headline["steering_overhead_by_mode"].items()
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if torch.cuda.is_available()
        else None,
        "model": models[-1],
        "models": dict(zip(models, results, strict=True)),
    }
    print(f"peak memory: {summary['peak_rss_mb']} MB resident")
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
