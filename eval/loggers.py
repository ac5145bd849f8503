"""Where a run's results go besides its folder: nowhere (``logger=none``) or W&B.

Both loggers have the same methods, called by ``calib.run`` in this order: ``start`` once,
then any of ``log_summary`` / ``log_table`` / ``log_images`` / ``log_file``, and ``finish``
in a ``finally`` block — so every job of a multirun closes its own W&B run, even when it
fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calib.secrets import KEY_PATTERNS, secret_by_name

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"api[_-]?key|token|secret|passw|authori[sz]ation|credential", re.I)
MIN_SECRET_LENGTH = 8  # shorter environment values are too likely to occur by chance


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look secret (``*_API_KEY``, ``*TOKEN*``...)."""
    environ = os.environ if environ is None else environ
    values = {
        v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def _secret_key(key: Any, value: Any) -> bool:
    """A secret by its key's name (``api_key``, ``token``, ``*_password``; not
    ``max_new_tokens``, nor ``api_key_env: NAME``) or by its value's look (``sk-...``)."""
    return secret_by_name(key, value)


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of ``value`` (nested dicts/lists) without secrets.

    Values under secret keys, and values that look like keys, are replaced whole
    (:func:`calib.secrets.is_secret`: explicit names and value patterns, so that
    ``max_new_tokens`` stays visible); any other string has the values of secret
    environment variables cut out (a key interpolated into a URL, say).
    """
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, Mapping):
        return {k: REDACTED if _secret_key(k, v) else redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        value = KEY_PATTERNS.sub(REDACTED, value)
    return value


def sweep_group() -> str | None:
    """The multirun's folder as a group name (``2025-01-31_12-00-00``); None for single runs."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    parts = Path(hydra_cfg.sweep.dir).parts
    return "_".join(parts[-2:]) if parts else None


class NullLogger:
    """Logs nothing; the run folder holds everything."""

    def start(self, config: dict[str, Any], run_dir: Path, name: str, tags: list[str]) -> None:
        pass

    def log_summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        pass

    def log_images(self, images: Mapping[str, Path]) -> None:
        pass

    def log_file(self, path: Path, kind: str) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """One W&B run per job: grouped by sweep, tagged with model and method, offline by default.

    The config is sent without secrets (:func:`redact`); tables are capped at
    ``max_table_rows`` rows, with images shown inline; files (adapter, steering vector) go
    up as artifacts.
    """

    def __init__(
        self,
        project: str,
        entity: str | None,
        mode: str,
        group: str | None,
        tags: list[str],
        dir: str,
        max_table_rows: int,
        log_artifacts: bool,
    ):
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode} must be offline, online or disabled")
        if max_table_rows < 0:
            raise ValueError(f"logger.max_table_rows={max_table_rows} must be 0 or more")
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.tags, self.dir = group, list(tags), dir
        self.max_table_rows, self.log_artifacts = max_table_rows, log_artifacts
        self._run: Any = None

    def start(self, config: dict[str, Any], run_dir: Path, name: str, tags: list[str]) -> None:
        import wandb

        os.makedirs(self.dir, exist_ok=True)
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            group=self.group or sweep_group(),
            name=name,
            tags=list(dict.fromkeys([*tags, *self.tags])),
            config=redact(config),
            dir=self.dir,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, x_disable_stats=True),
        )

    def log_summary(self, metrics: dict[str, Any]) -> None:
        secrets = secret_values()
        for key, value in metrics.items():
            self._run.summary[key] = redact(value, secrets)

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Log up to ``max_table_rows`` rows; an ``image`` column of file paths shows the images."""
        import wandb

        rows = rows[: self.max_table_rows]
        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        data = [[self._cell(c, r.get(c)) for c in columns] for r in rows]
        self._run.log({key: wandb.Table(columns=columns, data=data)})

    @staticmethod
    def _cell(column: str, value: Any) -> Any:
        import wandb

        if column == "image" and isinstance(value, str) and Path(value).is_file():
            return wandb.Image(value)
        if isinstance(value, (dict, list, tuple)):
            return str(value)
        return value

    def log_images(self, images: Mapping[str, Path]) -> None:
        import wandb

        present = {
            key: wandb.Image(str(path)) for key, path in images.items() if Path(path).is_file()
        }
        if present:
            self._run.log(present)

    def log_file(self, path: Path, kind: str) -> None:
        """Upload a file or a folder (adapter, steering vector) as an artifact of type ``kind``."""
        import wandb

        path = Path(path)
        if not self.log_artifacts or not path.exists():
            return
        if path.is_dir() and not any(path.iterdir()):
            return
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{self._run.name or self._run.id}-{kind}")
        artifact = wandb.Artifact(name=name, type=kind)
        if path.is_file():
            artifact.add_file(str(path))
        else:
            artifact.add_dir(str(path))
        self._run.log_artifact(artifact)

    def finish(self) -> None:
        """Close the run and flush it to disk (W&B writes its files from a helper process;
        tearing that down makes each job's files complete when the job ends)."""
        import wandb

        if self._run is not None:
            try:
                self._run.finish()
            finally:
                self._run = None
                wandb.teardown()
