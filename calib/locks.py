"""File locks that hold on a laptop and on a cluster's shared storage (NFS, Lustre, GPFS).

A lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
NFSv3+), holding who owns it: host, pid, when. ``fcntl`` locks are not used: Lustre
mounts without ``-o flock`` refuse them and NFS implements them through a lock daemon
that not every cluster runs.

A holder that dies leaves its file behind, so a waiter breaks a lock it can prove stale:

- same host and the pid is gone (a crash, ``kill -9``): stale at once;
- another host: stale once the file has not been touched for ``stale_after_s`` seconds.
  A live holder touches it every ``heartbeat_s`` seconds from a background thread, so a
  long LoRA training or a long baseline generation never looks stale.

Breaking is itself done under the rename rule: the waiter renames the stale file to a
unique name (only one waiter's rename succeeds) before it tries to create the lock anew.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from calib.errors import ConfigError

log = logging.getLogger("calib.locks")

HEARTBEAT_S = 30.0  # how often a holder touches its lock file
STALE_AFTER_S = 600.0  # a lock of another host untouched this long is broken
POLL_S = 0.5  # how often a waiter looks again


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner(path: Path) -> dict | None:
    """What a lock file says about its holder (None: gone or unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_stale(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    """True when the lock's holder is provably gone (see the module docstring)."""
    info = owner(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: not stale, just free
    if info is None:
        # Being written (a holder writes right after creating) or garbage: give it time.
        return age > max(stale_after_s, 5.0) or age > 60.0
    if info.get("host") == socket.gethostname():
        return not pid_alive(int(info.get("pid", -1)))
    return age > stale_after_s


class FileLock:
    """An exclusive lock on ``path`` (a file that exists while the lock is held).

    ``with FileLock(path):`` waits for it; :meth:`try_acquire` does not wait.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.path = Path(path)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self._token = ""
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return bool(self._token)

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale); never waits."""
        if self.held:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _unwritable(self.path.parent, err) from err
        for _ in range(2):  # once more after breaking a stale lock
            token = uuid.uuid4().hex
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if is_stale(self.path, self.stale_after_s) and self._break():
                    continue
                return False
            except OSError as err:
                raise _unwritable(self.path.parent, err) from err
            info = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({**info, "token": token}, handle)
            self._token = token
            self._start_heartbeat()
            return True
        return False

    def acquire(self, timeout_s: float | None = None, *, on_wait=None) -> None:
        """Wait until the lock is ours; ``on_wait(owner_info)`` is called once when it is busy."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        told = False
        while not self.try_acquire():
            if not told and on_wait is not None:
                on_wait(owner(self.path) or {})
                told = True
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.path} is still held by {owner(self.path)}")
            time.sleep(self.poll_s)

    def release(self) -> None:
        if not self.held:
            return
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
        info = owner(self.path)
        if info is not None and info.get("token") == self._token:
            self.path.unlink(missing_ok=True)
        self._token = ""

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _break(self) -> bool:
        """Move a stale lock aside; True when this process did (so it may retry)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else broke or released it: try again
        log.warning("broke a stale lock %s (held by %s)", self.path, owner(aside))
        aside.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()
        stop, path = self._stop, self.path

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                with contextlib.suppress(OSError):
                    os.utime(path)

        self._thread = threading.Thread(target=beat, name=f"lock {path.name}", daemon=True)
        self._thread.start()


@contextlib.contextmanager
def claim(path: str | os.PathLike, what: str) -> Iterator[bool]:
    """Wait for the lock at ``path``; yields True when nobody held it (this process does
    the work first) and False when another process held it (its result may now exist)."""
    lock = FileLock(path)
    waited = []

    def tell(info: dict) -> None:
        waited.append(info)
        log.info(
            "waiting for %s: pid %s on %s is doing it (lock %s)",
            what,
            info.get("pid", "?"),
            info.get("host", "?"),
            path,
        )

    lock.acquire(on_wait=tell)
    try:
        yield not waited
    finally:
        lock.release()


def _unwritable(folder: Path, err: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write a lock file in {folder} ({err.strerror or err}): set paths.cache_dir "
        "to a writable folder, or cache.enabled=false"
    )
