"""Every error the project raises on purpose: each names what is wrong and how to fix it.

The command-line programs print these as one clear message (no traceback); anything else
is a bug and keeps its traceback.
"""

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


class ModelLoadError(RuntimeError):
    """The configured model could not be loaded; the message names ``model.id`` and a fix."""


class ImageLoadError(OSError):
    """An image referenced by a conversation is missing or unreadable; names the file."""


class EndpointError(RuntimeError):
    """An API endpoint rejected the configuration (bad key, URL or model): fix it and re-run."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the message names ``method.learning_rate``."""


#: Errors that describe a problem of the user's input, not a bug: printed without traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    ModelLoadError,
    ImageLoadError,
    EndpointError,
    TrainingDiverged,
)
