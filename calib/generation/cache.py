"""The generation cache: append-only shards, one writer per file, safe on shared storage.

A record maps a *key* — the hash of everything that decides an output (model identity,
method fingerprint, rendered input with its image bytes, decoding settings; see
:func:`generation_key`) — to the generated text.

Storage (``<paths.cache_dir>/generations/``), designed for a laptop and for a cluster whose
jobs share the folder over NFS, Lustre or GPFS, where SQLite's WAL mode is not safe (it
needs shared memory on one host):

- **One writer per file.** Each process that generates writes only its own shard,
  ``<host>-<pid>-<random>.jsonl``, one JSON record per line. No two processes ever write
  the same file, so no file locking is needed for writes.
- **Appended and committed per batch.** A finished batch is appended with one ``write`` and
  ``fsync``-ed before generation goes on: a job killed at any moment loses at most the
  batch in flight, and at worst leaves a last line cut short, which readers ignore (only
  complete, parseable lines count).
- **Every job reads all shards**, incrementally (each file from where it last stopped), so a
  job reuses what any other job committed — the baseline is generated once per sweep.
- **Claims.** Jobs that need the same missing generations (the baseline of every job of a
  sweep) take turns through a lock (``claims/<hash of the keys>.lock``): one generates,
  the others wait and then read its shard.
- **Compaction** (``calib-cache compact``) merges the shards of finished writers into one
  file (written to a temporary name, then renamed) and deletes them. A live writer's shard
  is left alone: a writer holds ``<shard>.lock`` (:mod:`calib.locks`, refreshed by a
  heartbeat) while its file is open.

Safe storage: any POSIX filesystem, local or shared (NFS v3/v4, Lustre, GPFS, BeeGFS), with
any number of jobs on any number of hosts. Needed: atomic ``rename`` and ``O_EXCL`` file
creation within a folder (both hold on those filesystems). Not safe: object stores mounted
as folders (s3fs, gcsfuse), which cannot append. ``calib-cache clear`` and ``compact``
skip the shards of live writers; run ``clear`` when no job is running to empty everything.

A cache from an older version (``generations.sqlite``) is imported by ``calib-cache compact``.
``calib-cache stats|clear|compact`` (:mod:`calib.cli.cache`) inspects, empties and merges it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calib.errors import ConfigError, DataError
from calib.hashing import image_digest
from calib.io import write_bytes_atomic
from calib.locks import FileLock, claim, is_stale

log = logging.getLogger("calib.generation.cache")

CACHE_DIR = "generations"  # inside paths.cache_dir: the shards
LEGACY_FILE = "generations.sqlite"  # the single SQLite file of older versions (imported by compact)
CLAIMS_DIR = "claims"  # inside the shards' folder: locks of generations being made
SHARD_SUFFIX = ".jsonl"
LOCK_SUFFIX = ".lock"
KEY_VERSION = 1  # bump when the key recipe changes, so old rows are never served for new keys


@dataclass(frozen=True)
class Entry:
    """One generated response to store."""

    key: str
    response: str
    model: str
    method: str
    sample_id: str | None = None


def _record(entry: Entry, now: float) -> bytes:
    row = {
        "k": entry.key,
        "r": entry.response,
        "m": entry.model,
        "f": entry.method,
        "s": entry.sample_id,
        "t": now,
    }
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


def _parse(line: bytes) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if not isinstance(row, dict) or not isinstance(row.get("k"), str):
        return None
    if not isinstance(row.get("r"), str):
        return None
    return row


def _unwritable(folder: Path, err: OSError) -> ConfigError:
    return ConfigError(
        f"paths.cache_dir: cannot write the generation cache in {folder} "
        f"({err.strerror or err}): set paths.cache_dir to a writable folder, "
        "or cache.enabled=false to run without a cache"
    )


class GenerationCache:
    """Key -> response store in ``<cache_dir>/generations/`` (see the module docstring).

    Reads are served from an in-memory index of every shard, refreshed on each lookup;
    writes go to this process's own shard, opened on the first write.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)  # the shards' folder
        self._index: dict[str, tuple[str, str, str]] = {}  # key -> (response, model, method)
        self._offsets: dict[str, int] = {}  # shard name -> bytes read (complete lines)
        self._bad: dict[str, int] = {}  # shard name -> unreadable lines seen
        self._shard: Path | None = None
        self._fd = -1
        self._lock: FileLock | None = None
        self._pid = os.getpid()

    @classmethod
    def in_dir(cls, cache_dir: str | os.PathLike) -> GenerationCache:
        return cls(Path(cache_dir) / CACHE_DIR)

    # -- files --------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        """Every shard in the folder (live writers' and finished ones), by name."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name.endswith(SHARD_SUFFIX))

    def _is_live(self, shard: Path) -> bool:
        """Whether a writer still appends to ``shard`` (its lock is held and not stale)."""
        if self._shard is not None and shard == self._shard:
            return True
        lock = shard.with_name(shard.name + LOCK_SUFFIX)
        return lock.exists() and not is_stale(lock)

    def _open_shard(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            return
        self._pid, self._fd, self._shard, self._lock = os.getpid(), -1, None, None  # a fork
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40] or "host"
        shard = self.path / f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = FileLock(shard.with_name(shard.name + LOCK_SUFFIX))
            lock.try_acquire()  # a fresh, unique name: always free
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            self._fd = os.open(shard, flags, 0o666)
        except OSError as err:
            raise _unwritable(self.path, err) from err
        self._shard, self._lock = shard, lock

    def check_writable(self) -> None:
        """Raise ConfigError now (before any work) when the folder cannot be written."""
        self._open_shard()

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
            empty = self._shard is not None and self._shard.stat().st_size == 0
            if empty:
                self._shard.unlink(missing_ok=True)
            if self._lock is not None:
                self._lock.release()
        self._fd, self._shard, self._lock = -1, None, None

    def __enter__(self) -> GenerationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what every shard gained since the last look (a shard that shrank or
        vanished, after compact or clear, makes the index start over)."""
        shards = self.shards()
        names = {p.name for p in shards}
        sizes = {}
        for shard in shards:
            try:
                sizes[shard.name] = shard.stat().st_size
            except FileNotFoundError:  # compacted meanwhile
                names.discard(shard.name)
        vanished = set(self._offsets) - names
        shrank = any(sizes.get(n, 0) < off for n, off in self._offsets.items() if n in sizes)
        if vanished or shrank:
            self._index.clear()
            self._offsets.clear()
            self._bad.clear()
        for shard in shards:
            if shard.name in sizes and sizes[shard.name] > self._offsets.get(shard.name, 0):
                self._read(shard)

    def _read(self, shard: Path) -> None:
        start = self._offsets.get(shard.name, 0)
        try:
            with open(shard, "rb") as handle:
                handle.seek(start)
                data = handle.read()
        except FileNotFoundError:
            return
        except OSError as err:
            raise DataError(
                f"cannot read the generation cache file {shard} ({err.strerror or err}): "
                f"move it aside (mv {shard} {shard}.bad) or set cache.enabled=false"
            ) from err
        end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        bad = 0
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            row = _parse(line)
            if row is None:
                bad += 1
                continue
            self._index[row["k"]] = (row["r"], str(row.get("m", "")), str(row.get("f", "")))
        self._offsets[shard.name] = start + end
        if bad:
            self._bad[shard.name] = self._bad.get(shard.name, 0) + bad
            log.warning(
                "generation cache: %d unreadable line(s) in %s were skipped (a damaged file?); "
                "the rest is used. To drop the file: mv %s %s.bad (or cache.enabled=false)",
                bad,
                shard,
                shard,
                shard,
            )

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached responses among ``keys`` (missing keys are absent from the result)."""
        self.refresh()
        found = {}
        for key in keys:
            hit = self._index.get(key)
            if hit is not None:
                found[key] = hit[0]
        return found

    def claim(self, keys: Sequence[str]) -> AbstractContextManager[bool]:
        """A lock on this set of keys (``claims/<hash>.lock``): jobs that need the same
        generations take turns, so the second finds the first's in the cache (a sweep's
        baseline is generated once). Yields True when no other job held it."""
        digest = hashlib.sha256("\n".join(sorted(set(keys))).encode("utf-8")).hexdigest()
        return claim(self.path / CLAIMS_DIR / f"{digest[:32]}.lock", f"{len(keys)} generation(s)")

    # -- writing ------------------------------------------------------------------------
    def put_many(self, entries: Iterable[Entry]) -> None:
        """Append entries to this process's shard in one write, flushed to disk (a batch)."""
        now = time.time()
        entries = list(entries)
        if not entries:
            return
        self._open_shard()
        data = b"".join(_record(e, now) for e in entries)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        for e in entries:
            self._index[e.key] = (e.response, e.model, e.method)

    # -- inspecting and maintaining -----------------------------------------------------
    def count(self) -> int:
        self.refresh()
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        """Entry counts per (model, method), the shards and their size."""
        self.refresh()
        groups: dict[tuple[str, str], int] = {}
        for _, model, method in self._index.values():
            groups[(model, method)] = groups.get((model, method), 0) + 1
        shards = self.shards()
        size = sum(p.stat().st_size for p in shards if p.exists())
        return {
            "path": str(self.path),
            "rows": len(self._index),
            "bytes": size,
            "shards": len(shards),
            "live_shards": sum(self._is_live(p) for p in shards),
            "unreadable_lines": dict(self._bad),
            "legacy": str(self.legacy_path) if self.legacy_path.exists() else None,
            "groups": [
                {"model": m, "method": f, "rows": n} for (m, f), n in sorted(groups.items())
            ],
        }

    @property
    def legacy_path(self) -> Path:
        return self.path.parent / LEGACY_FILE

    def _rows(self, shard: Path) -> list[dict]:
        try:
            data = shard.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        return [r for r in map(_parse, data[:end].split(b"\n")) if r is not None]

    def clear(self, *, model: str | None = None, method: str | None = None) -> int:
        """Delete entries (all, or those of one model and/or method fingerprint) from the
        shards of finished writers; returns how many.

        ``model`` is a model key as ``stats`` prints it (``<identity>|<dtype>``) or just the
        identity (``run.model_identity`` in metrics.json), which matches every dtype.
        """

        def matches(row: dict) -> bool:
            m = str(row.get("m", ""))
            if model is not None and not (m == model or m.startswith(f"{model}|")):
                return False
            return method is None or row.get("f") == method

        self.close()  # this process's own shard is finished too (a later write opens another)
        self.refresh()
        before = set(self._index)
        skipped = 0
        for shard in self.shards():
            if self._is_live(shard):
                skipped += 1
                continue
            rows = self._rows(shard)
            keep = [r for r in rows if not matches(r)]
            if not keep:
                shard.unlink(missing_ok=True)
            elif len(keep) < len(rows):
                _write_shard(shard, keep)
        if skipped:
            log.warning(
                "generation cache: %d shard(s) of running jobs were left alone; run "
                "calib-cache clear again when they have finished",
                skipped,
            )
        self._index.clear()
        self._offsets.clear()
        self.refresh()
        return len(before - set(self._index))

    def compact(self) -> dict[str, int]:
        """Merge the shards of finished writers (and an older version's SQLite file) into
        one shard; returns counts of what was merged."""
        self.close()
        with FileLock(self.path / ".compact.lock"):
            merged: dict[str, dict] = {}
            done = [s for s in self.shards() if not self._is_live(s)]
            for shard in done:
                for row in self._rows(shard):
                    merged[row["k"]] = row
            imported = self._import_legacy(merged)
            if not done and not imported:
                return {"shards": 0, "entries": 0, "imported": 0}
            target = self.path / f"compact-{uuid.uuid4().hex[:12]}{SHARD_SUFFIX}"
            _write_shard(target, list(merged.values()))
            for shard in done:
                shard.unlink(missing_ok=True)
                shard.with_name(shard.name + LOCK_SUFFIX).unlink(missing_ok=True)
            if imported:
                self.legacy_path.rename(self.legacy_path.with_name(LEGACY_FILE + ".imported"))
        return {"shards": len(done), "entries": len(merged), "imported": imported}

    def _import_legacy(self, merged: dict[str, dict]) -> int:
        path = self.legacy_path
        if not path.exists():
            return 0
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                rows = conn.execute(
                    "SELECT key, response, model, method, sample_id, created FROM generations"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as err:
            raise DataError(
                f"cannot import the old generation cache {path} ({err}): it is damaged or not "
                f"a cache. Move it aside (mv {path} {path}.bad) and run calib-cache compact "
                "again; runs never read it"
            ) from err
        for key, response, model, method, sample_id, created in rows:
            merged.setdefault(
                key,
                {"k": key, "r": response, "m": model, "f": method, "s": sample_id, "t": created},
            )
        return len(rows)


def _write_shard(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_bytes_atomic(path, data.encode("utf-8"))


# -- keys ---------------------------------------------------------------------------------
def generation_key(
    *,
    model: str,
    method: str,
    rendered: str,
    images: Sequence[object],
    decoding: Mapping[str, Any],
) -> str:
    """The cache key of one generation.

    The rendered prompt text determines the token ids for a given tokenizer (which the
    model identity pins), and the image bytes determine the pixel values and the number
    of image tokens; so hashing them is enough and avoids running the processor twice.
    """
    payload = {
        "v": KEY_VERSION,
        "model": model,
        "method": method,
        "input": rendered,
        "images": [image_digest(image) for image in images],
        "decoding": dict(sorted(decoding.items())),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
