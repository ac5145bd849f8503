"""Content hashes that name things in cache keys and cards: images, JSON records, samples.

An image is named by its *content* (the file's bytes, or a PIL image's pixels), never by
its path, so a copied or re-rendered identical image keeps its name and an edited one
changes it. Every cache key and training-data hash in the project goes through here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from calib.types import Sample

_file_hashes: dict[tuple[str, int, int], str] = {}


def image_digest(image: object) -> str:
    """SHA-256 of an image payload: the file's bytes for a path, the pixels for a PIL image.

    File hashes are memoised per (path, size, mtime), so a run hashes each file once.
    """
    if isinstance(image, Image.Image):
        digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            stat = path.stat()
        except OSError as err:
            raise FileNotFoundError(f"image {path} of a sample cannot be read: {err}") from err
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if memo not in _file_hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _file_hashes[memo] = digest.hexdigest()
        return _file_hashes[memo]
    raise TypeError(f"an image part must be a path or a PIL image, got {type(image).__name__}")


def forget_image_digests() -> None:
    """Drop the memoised file hashes (a new process starts without them; benchmarks use this)."""
    _file_hashes.clear()


def records_digest(records: Iterable[Any], length: int = 16) -> str:
    """Hex digest of JSON-serialisable records, in order (sorted keys; ``str`` for the rest)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:length]


def samples_digest(samples: Sequence[Sample], length: int = 16) -> str:
    """What a method was fitted on: ids, labels, prompts, groups and image *contents*."""
    return records_digest(
        (
            [s.id, s.label, s.prompt, s.group, image_digest(s.image) if s.image else None]
            for s in samples
        ),
        length,
    )
