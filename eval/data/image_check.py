"""Is each image file there and readable? A full check (every pixel decoded) for loaders and
``calib-data check``; ``calib-data check --quick`` skips the decoding.

The quick check opens the file, lets Pillow verify it (PNG: every chunk and its checksum) and,
for JPEG, looks for the end-of-image marker, which catches missing, empty, non-image and
truncated files without decoding pixels. The full check also decodes every pixel, which is
what catches a PNG whose chunks are intact but whose compressed data is broken (it would stop
a run mid-generation); decoding is cheap next to generating.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

MISSING = "missing"
JPEG_END = b"\xff\xd9"
# Files that passed a check in this process, keyed by (path, mtime, size, full): a sweep
# that loads the benchmark once per job re-checks only files that changed.
_PASSED: set[tuple[str, int, int, bool]] = set()


def _identity(path: str) -> tuple[str, int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return (path, stat.st_mtime_ns, stat.st_size)


def image_problem(path: str | Path, full: bool = False) -> str | None:
    """None when the image is fine, else ``"missing"`` or ``"unreadable: <reason>"``."""
    path = Path(path)
    if not path.is_file():
        return MISSING
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb and palette warnings
            with Image.open(path) as image:
                image_format = image.format
                image.verify()
            if image_format == "JPEG":
                with open(path, "rb") as handle:
                    handle.seek(-2, 2)
                    if handle.read(2) != JPEG_END:
                        return "unreadable: truncated JPEG (no end-of-image marker)"
            if full:
                with Image.open(path) as image:
                    image.load()
    except Exception as error:  # Pillow raises many types for broken files
        return f"unreadable: {type(error).__name__}: {error}".replace(str(path), path.name)
    return None


@dataclass
class ImageReport:
    """Outcome of checking a set of image files."""

    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason

    @property
    def bad(self) -> list[str]:
        return [*self.missing, *self.unreadable]

    def bad_lines(self, first: int = 5) -> list[str]:
        """The first ``first`` problems, one line each: path and what is wrong."""
        lines = [f"{p} (missing)" for p in self.missing[:first]]
        lines += [f"{p} ({why})" for p, why in list(self.unreadable.items())[:first]]
        return lines[:first]


def check_images(paths: Iterable[str | Path], full: bool = False, workers: int = 4) -> ImageReport:
    """Check every path (each once, in order); threads overlap the file reads."""
    unique = list(dict.fromkeys(str(p) for p in paths))
    report = ImageReport()

    def problem_of(path: str) -> str | None:
        identity = _identity(path)
        if identity is not None and ((*identity, full) in _PASSED or (*identity, True) in _PASSED):
            return None
        problem = image_problem(path, full=full)
        if problem is None and identity is not None:
            _PASSED.add((*identity, full))
        return problem

    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = pool.map(problem_of, unique)
        for path, problem in zip(unique, problems, strict=True):
            if problem is None:
                report.present.append(path)
            elif problem == MISSING:
                report.missing.append(path)
            else:
                report.unreadable[path] = problem
    return report
