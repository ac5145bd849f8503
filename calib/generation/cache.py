"""The generation cache: one SQLite database (WAL mode) shared by every run and sweep job.

A row maps a *key* — the hash of everything that decides an output (model identity,
method fingerprint, rendered input with its image bytes, decoding settings; see
:func:`generation_key`) — to the generated text. Runs commit results batch by batch in
short transactions, so a crashed or interrupted run loses at most the batch in flight and
a re-run generates only what is missing. Concurrent jobs of a multirun share the file
safely: WAL lets readers and one writer proceed together, and a busy timeout makes a
second writer wait its turn instead of failing.

``calib-cache stats|clear`` (:mod:`calib.cli.cache`) inspects and empties it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calib.hashing import image_digest

CACHE_FILE = "generations.sqlite"  # inside paths.cache_dir
KEY_VERSION = 1  # bump when the key recipe changes, so old rows are never served for new keys
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another job's transaction to finish
_SQLITE_MAX_VARS = 500  # keys per SELECT ... IN (...) query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    sample_id TEXT,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Entry:
    """One generated response to store."""

    key: str
    response: str
    model: str
    method: str
    sample_id: str | None = None


class GenerationCache:
    """Key -> response store in ``<cache_dir>/generations.sqlite``.

    One connection per process (opened lazily, reopened after a fork); every write is
    its own short ``BEGIN IMMEDIATE`` transaction.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    @classmethod
    def in_dir(cls, cache_dir: str | os.PathLike) -> GenerationCache:
        return cls(Path(cache_dir) / CACHE_FILE)

    # -- connection -------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable against process crashes
            conn.execute(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> GenerationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads and writes -------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached responses among ``keys`` (missing keys are absent from the result)."""
        conn = self._connection()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _SQLITE_MAX_VARS):
            chunk = unique[start : start + _SQLITE_MAX_VARS]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, response FROM generations WHERE key IN ({marks})", chunk
            )
            found.update(rows)
        return found

    def put_many(self, entries: Iterable[Entry]) -> None:
        """Store entries in one transaction (all or nothing)."""
        now = time.time()
        rows = [(e.key, e.response, e.model, e.method, e.sample_id, now) for e in entries]
        if not rows:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO generations "
                "(key, response, model, method, sample_id, created) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def count(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Row counts per (model, method) and the size of the database files."""
        conn = self._connection()
        groups = conn.execute(
            "SELECT model, method, COUNT(*) FROM generations GROUP BY model, method "
            "ORDER BY model, method"
        ).fetchall()
        size = sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )
        return {
            "path": str(self.path),
            "rows": sum(n for _, _, n in groups),
            "bytes": size,
            "groups": [{"model": m, "method": f, "rows": n} for m, f, n in groups],
        }

    def clear(self, *, model: str | None = None, method: str | None = None) -> int:
        """Delete rows (all, or those of one model and/or method fingerprint).

        ``model`` is a model key as ``stats`` prints it (``<identity>|<dtype>``) or just the
        identity (``run.model_identity`` in metrics.json), which matches every dtype.
        """
        where, args = [], []
        if model is not None:
            where.append("(model = ? OR substr(model, 1, ?) = ?)")
            args += [model, len(model) + 1, f"{model}|"]
        if method is not None:
            where.append("method = ?")
            args.append(method)
        sql = "DELETE FROM generations" + (" WHERE " + " AND ".join(where) if where else "")
        with self._write() as conn:
            deleted = conn.execute(sql, args).rowcount
        if not where:
            self._connection().execute("VACUUM")
        return deleted


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
