"""A small on-disk cache of judge replies: one JSON file per key, written atomically.

Only *usable* replies are stored (a judge checks that a reply parses before it calls
``put``), so a failed or unparseable reply is asked again on the next run instead of
staying UNJUDGED forever. ``clear_judge_caches`` / ``judge_cache_stats`` are what the
``calib-cache`` command line calls for ``<paths.cache_dir>/judge``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from calib.io import write_text_atomic

JUDGE_CACHE_SUBDIR = "judge"  # judge caches live in <paths.cache_dir>/judge (conf/judge/*.yaml)


def cache_key(*parts: Any) -> str:
    """A stable hex digest of JSON-serialisable parts (settings, prompt, response, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    """``get`` / ``put`` JSON records under ``root/<key[:2]>/<key>.json``.

    Safe to use from several threads (and processes): each write goes to a temporary file
    that is renamed into place, so a reader never sees half a record.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a damaged entry is a miss; the next put replaces it

    def put(self, key: str, record: dict) -> None:
        write_text_atomic(self._path(key), json.dumps(record, ensure_ascii=False))

    def delete(self, key: str) -> bool:
        """Remove one entry; True when there was one."""
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def entries(self) -> Iterator[Path]:
        """Every stored record file (temporary files of writes in flight excluded)."""
        if not self.root.is_dir():
            return iter(())
        return (p for p in sorted(self.root.glob("*/*.json")) if not p.name.startswith(".tmp-"))

    def clear(self, keep: Callable[[dict], bool] | None = None) -> int:
        """Delete entries (all, or those for which ``keep(record)`` is False); return how many.

        Unreadable records are always deleted. Empty shard folders are removed.
        """
        deleted = 0
        for path in list(self.entries()):
            if keep is not None:
                try:
                    if keep(json.loads(path.read_text(encoding="utf-8"))):
                        continue
                except (OSError, ValueError):
                    pass
            path.unlink(missing_ok=True)
            deleted += 1
        if self.root.is_dir():
            for shard in self.root.iterdir():
                if shard.is_dir() and not any(shard.iterdir()):
                    shard.rmdir()
        return deleted


def judge_cache_dir(cache_dir: str | Path) -> Path:
    """Where judge replies of a run with ``paths.cache_dir=cache_dir`` are kept."""
    return Path(cache_dir) / JUDGE_CACHE_SUBDIR


def _usable(record: dict) -> bool:
    from eval.judges.prompt import parse_class

    return parse_class(record.get("reply")) is not None


def clear_judge_caches(cache_dir: str | Path, *, only_unusable: bool = False) -> int:
    """Delete cached judge replies under ``<cache_dir>/judge``; return how many were deleted.

    Args:
        cache_dir: the run's ``paths.cache_dir`` (not the ``judge`` folder itself).
        only_unusable: delete only replies that name no class (left by versions that cached
            them, and damaged files), keeping the good ones.
    """
    cache = ReplyCache(judge_cache_dir(cache_dir))
    return cache.clear(keep=_usable if only_unusable else None)


def judge_cache_stats(cache_dir: str | Path) -> dict[str, Any]:
    """What is cached under ``<cache_dir>/judge``: path, entries, bytes, per model, unusable."""
    cache = ReplyCache(judge_cache_dir(cache_dir))
    entries, size, unusable = 0, 0, 0
    models: Counter[str] = Counter()
    for path in cache.entries():
        entries += 1
        size += path.stat().st_size
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            unusable += 1
            continue
        models[str(record.get("settings", {}).get("model", "?"))] += 1
        unusable += not _usable(record)
    return {
        "path": str(cache.root),
        "entries": entries,
        "bytes": size,
        "unusable": unusable,
        "by_model": dict(sorted(models.items())),
    }


def ask_cached(
    cache: ReplyCache | None,
    key: str,
    settings: dict,
    usable: Callable[[str], bool],
    request: Callable,
) -> tuple[str | None, str | None, str]:
    """A usable reply for ``key``: from ``cache``, else from ``request()`` (a ``ChatResult``),
    stored only when ``usable(reply)``. A cached reply that is not usable (left by an older
    version) counts as a miss and is replaced; ``cache=None`` always asks.

    Returns ``(reply, error, outcome)``; outcome is ``cache_hits``, ``requests`` or
    ``failed`` (no reply, or an unusable one: returned, never stored).
    """
    cached = cache.get(key) if cache else None
    if cached is not None and usable(cached.get("reply") or ""):
        return cached["reply"], None, "cache_hits"
    result = request()
    if result.text is None:
        return None, result.error, "failed"
    if not usable(result.text):
        return result.text, None, "failed"  # not stored: the next run asks again
    if cache:
        cache.put(key, {"reply": result.text, "settings": settings})
    return result.text, None, "requests"
