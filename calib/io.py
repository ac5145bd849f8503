"""Atomic file writes: a reader sees the old file or the complete new one, never half.

Every file the project writes for others to read (run results, rendered images, cached
replies, adapter cards) goes through :func:`write_bytes_atomic`: the bytes go to a
temporary file in the same folder, are flushed to disk, and then replace the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_bytes_atomic(path: Path, data: bytes, *, unless_equal: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically; returns True when the file was (re)written.

    Args:
        path: the target file (its folder is created).
        data: the complete new content.
        unless_equal: leave the file alone when it already holds exactly these bytes
            (rendered images: a re-run rewrites nothing).
    """
    path = Path(path)
    same_size = unless_equal and path.is_file() and path.stat().st_size == len(data)
    if same_size and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); results are meant to be shared like any file.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
