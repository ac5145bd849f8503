"""A calibration method can live outside the package: one class in the user's own module, one
YAML in the user's own config folder (added to Hydra's search path), run end to end.

This is the recipe of the README section "Add your own calibration method".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calib.cli.common import compose_config, config_dir
from calib.errors import ConfigError
from calib.pipeline import build_method, load_data, run
from calib.types import CalibrationMethod
from tests.conftest import TINY_RUN

CONF = config_dir()
MODULE = "lab_methods"
FAST = ["generation.max_new_tokens=6", "metrics.n_boot=0", "data.limit=24", "utility=none"]

METHOD_SOURCE = '''
"""My lab's calibration methods (lives outside vsc-calib)."""

import hashlib
from contextlib import nullcontext
from pathlib import Path

from calib.chat import default_conversation, text_part


class AnswerBriefly:
    """Asks for a one-line answer after every query."""

    def __init__(self, request: str):
        self.request = request

    def fit(self, vlm, samples, workdir: Path) -> None:
        (workdir / "request.txt").write_text(self.request)  # an artifact, for the record

    def conversation(self, sample):
        messages = default_conversation(sample)
        messages[-1]["content"][-1] = text_part(f"{sample.prompt} {self.request}")
        return messages

    def active(self, vlm):
        return nullcontext()  # nothing to install around generation

    def fingerprint(self) -> str:
        return "answer_briefly-" + hashlib.sha256(self.request.encode()).hexdigest()[:12]
'''

METHOD_YAML = f"""\
# Launch: calib-run hydra.searchpath=[file:///path/to/my_conf] method=answer_briefly
_target_: {MODULE}.AnswerBriefly
request: Answer in one sentence.  # appended to every query
"""


@pytest.fixture
def user_project(tmp_path: Path) -> tuple[Path, Path]:
    """A user's folder with their own module and config folder; returns (code, conf)."""
    code = tmp_path / "my_code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(textwrap.dedent(METHOD_SOURCE))
    conf = tmp_path / "my_conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "answer_briefly.yaml").write_text(METHOD_YAML)
    return code, conf


@pytest.fixture
def importable(user_project, monkeypatch):
    code, _ = user_project
    monkeypatch.syspath_prepend(str(code))
    yield
    sys.modules.pop(MODULE, None)


def test_a_method_outside_the_package_runs_end_to_end(
    user_project, importable, tiny_cache_dir, tmp_path
):
    _, conf = user_project
    cfg = compose_config(
        overrides=[
            *TINY_RUN,
            f"hydra.searchpath=[file://{conf}]",
            "method=answer_briefly",
            f"paths.cache_dir={tiny_cache_dir}",
            *FAST,
        ],
    )
    method = build_method(cfg)
    assert isinstance(method, CalibrationMethod)
    sample = load_data(cfg).evaluation[0]
    assert method.conversation(sample)[-1]["content"][-1]["text"].endswith(
        "Answer in one sentence."
    )

    run_dir = tmp_path / "run"
    metrics = run(cfg, run_dir)
    assert metrics["run"]["method_fingerprint"] == method.fingerprint()
    assert (run_dir / "method" / "request.txt").read_text() == "Answer in one sentence."
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.method._target_ == f"{MODULE}.AnswerBriefly"
    assert json.loads((run_dir / "metrics.json").read_text())["run"]["n_evaluation"] > 0


@pytest.mark.slow
def test_a_method_outside_the_package_from_the_command_line(user_project, tiny_cache_dir, tmp_path):
    code, conf = user_project
    run_dir = tmp_path / "cli_run"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.cli.run",
            *TINY_RUN,
            f"hydra.searchpath=[file://{conf}]",
            "method=answer_briefly",
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tiny_cache_dir}",
            *FAST,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["run"]["method"] == "answer_briefly"
    assert metrics["run"]["method_fingerprint"].startswith("answer_briefly-")
    assert (run_dir / "method" / "request.txt").is_file()


INCOMPLETE_SOURCE = '''
class HalfDone:
    """Forgot ``active`` and ``fingerprint``; fitting would take an hour."""

    def __init__(self, request: str):
        self.request = request

    def fit(self, vlm, samples, workdir):
        raise AssertionError("never reached: the method is checked when it is built")

    def conversation(self, sample):
        return []
'''


def test_a_method_missing_a_member_fails_when_built_naming_target_and_member(
    user_project, importable, tiny_cache_dir, tmp_path
):
    code, conf = user_project
    (code / f"{MODULE}.py").write_text(textwrap.dedent(INCOMPLETE_SOURCE))
    (conf / "method" / "half_done.yaml").write_text(f"_target_: {MODULE}.HalfDone\nrequest: x\n")
    cfg = compose_config(
        [
            *TINY_RUN,
            f"hydra.searchpath=[file://{conf}]",
            "method=half_done",
            f"paths.cache_dir={tmp_path}",
        ]
    )
    with pytest.raises(ConfigError) as error:
        build_method(cfg)
    message = str(error.value)
    assert f"method._target_={MODULE}.HalfDone" in message
    assert "without active, fingerprint" in message and "CalibrationMethod" in message
    with pytest.raises(ConfigError, match="without active, fingerprint"):
        run(cfg, tmp_path / "run")  # before any data, model or fitting
    assert not (tmp_path / "run" / "method").exists()
