"""Errors that tell the user which setting is wrong and how to fix it."""

from __future__ import annotations


class ConfigError(ValueError):
    """One or more configuration problems, reported together.

    Each problem names the config key (``method.layer=40``) and the fix.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


class DataError(RuntimeError):
    """A data file or folder is missing, unreadable or malformed (the message names it)."""
