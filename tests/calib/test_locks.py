"""File locks for shared storage: exclusive, released, and broken only when provably stale."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from calib.locks import FileLock, is_stale


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(path, host: str, pid: int, age_s: float = 0.0) -> None:
    path.write_text(json.dumps({"host": host, "pid": pid, "time": time.time(), "token": "x"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_one_holder_at_a_time_and_release(tmp_path):
    first, second = FileLock(tmp_path / "k.lock"), FileLock(tmp_path / "k.lock")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert not (tmp_path / "k.lock").exists()
    assert second.try_acquire()
    second.release()


def test_a_dead_holder_on_this_host_is_broken_at_once(tmp_path):
    path = tmp_path / "k.lock"
    write_lock(path, socket.gethostname(), dead_pid())
    assert is_stale(path)
    lock = FileLock(path)
    assert lock.try_acquire(), "a crashed job's lock does not block the next one"
    lock.release()


@pytest.mark.parametrize(("age_s", "stale"), [(5.0, False), (3600.0, True)])
def test_another_hosts_lock_is_broken_only_when_untouched_for_long(tmp_path, age_s, stale):
    path = tmp_path / "k.lock"
    write_lock(path, "some-other-node", 12345, age_s=age_s)
    assert is_stale(path, stale_after_s=600) is stale
    assert FileLock(path, stale_after_s=600).try_acquire() is stale


def test_a_live_holder_keeps_its_lock_fresh(tmp_path):
    lock = FileLock(tmp_path / "k.lock", heartbeat_s=0.05)
    assert lock.try_acquire()
    old = time.time() - 3600
    os.utime(tmp_path / "k.lock", (old, old))
    time.sleep(0.3)
    assert time.time() - (tmp_path / "k.lock").stat().st_mtime < 5, "the heartbeat touched it"
    lock.release()
