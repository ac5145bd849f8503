"""Every console program is declared, importable, and says what it does with ``--help``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

PROGRAMS = {
    "calib-run": "calib.cli.run:main",
    "calib-judge": "calib.cli.judge:main",
    "calib-data": "calib.cli.data:main",
    "calib-compare": "calib.cli.compare:main",
    "calib-cache": "calib.cli.cache:main",
    "calib-bench": "calib.cli.bench:main",
}


def test_every_program_is_a_console_script_of_the_installed_package():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert {name: scripts.get(name) for name in PROGRAMS} == PROGRAMS


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_help_says_what_the_program_does(name):
    module = PROGRAMS[name].split(":")[0]
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert name in done.stdout
    docstring = importlib.import_module(module).__doc__
    summary = docstring.strip().splitlines()[0].split(":", 1)[1].strip()
    assert summary[:40] in " ".join(done.stdout.split()), "--help shows the module's summary"
