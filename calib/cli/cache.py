"""``calib-cache``: inspect or empty the generation cache shared by runs.

calib-cache stats                      # entries per model and method, shards, size
calib-cache clear                      # delete every cached generation (of finished jobs)
calib-cache clear --method none        # only one method's fingerprint (or --model ID)
calib-cache compact                    # merge finished jobs' shards (and an old .sqlite) into one
calib-cache stats --cache-dir /scratch/me/vsc-calib-cache
calib-cache clear --judge              # the judges' reply caches (<cache_dir>/judge) instead
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calib.cli.common import program, resolved_paths, run_program
from calib.generation.cache import CACHE_DIR, LEGACY_FILE, GenerationCache
from eval.judges.cache import clear_judge_caches, judge_cache_dir, judge_cache_stats


def default_cache_dir() -> Path:
    """``paths.cache_dir`` as a run launched from here resolves it."""
    return Path(resolved_paths()["cache_dir"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = program("calib-cache", __doc__)
    parser.add_argument("command", choices=["stats", "clear", "compact"])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="the run's paths.cache_dir (default: as conf/paths/default.yaml resolves it)",
    )
    parser.add_argument(
        "--model", help="clear: only this model (identity from metrics.json, or key from stats)"
    )
    parser.add_argument("--method", help="clear: only this method fingerprint")
    parser.add_argument(
        "--judge",
        action="store_true",
        help="the judges' reply caches (<cache_dir>/judge) instead of the generations",
    )
    args = parser.parse_args(argv)
    return run_program("calib-cache", lambda: _cache_command(args))


def _judge_cache_command(args, cache_dir: Path) -> int:
    if args.command == "clear":
        deleted = clear_judge_caches(cache_dir)
        print(f"deleted {deleted} cached judge repl(ies) from {judge_cache_dir(cache_dir)}")
        return 0
    stats = judge_cache_stats(cache_dir)
    print(
        f"{stats['path']}: {stats['entries']} judge repl(ies), {stats['bytes'] / 1e6:.1f} MB, "
        f"{stats['unusable']} without a class"
    )
    for model, count in stats["by_model"].items():
        print(f"  {count:>8}  {model}")
    return 0


def _cache_command(args) -> int:
    if args.judge:
        return _judge_cache_command(args, args.cache_dir or default_cache_dir())
    cache_dir = args.cache_dir or default_cache_dir()
    path = cache_dir / CACHE_DIR
    if not path.exists() and not (cache_dir / LEGACY_FILE).exists():
        print(f"no generation cache at {path} (nothing generated yet, or another --cache-dir)")
        return 0
    with GenerationCache(path) as cache:
        if args.command == "clear":
            deleted = cache.clear(model=args.model, method=args.method)
            print(f"deleted {deleted} cached generation(s) from {path}")
            return 0
        if args.command == "compact":
            done = cache.compact()
            print(
                f"merged {done['shards']} shard(s) into one: {done['entries']} generation(s)"
                + (f", {done['imported']} imported from {LEGACY_FILE}" if done["imported"] else "")
            )
            return 0
        stats = cache.stats()
    print(
        f"{stats['path']}: {stats['rows']} generation(s) in {stats['shards']} shard(s) "
        f"({stats['live_shards']} being written), {stats['bytes'] / 1e6:.1f} MB"
    )
    for group in stats["groups"]:
        print(f"  {group['rows']:>8}  {group['model']}  |  method {group['method']}")
    for name, bad in stats["unreadable_lines"].items():
        print(f"  warning: {bad} unreadable line(s) in {path / name} (skipped; mv it aside)")
    if stats["legacy"]:
        print(
            f"  {stats['legacy']}: an older version's cache, not read; "
            "calib-cache compact imports it"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
