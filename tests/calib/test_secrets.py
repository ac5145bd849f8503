"""Secrets: refused on calib-run's command line before anything is written; W&B redaction by
key names and value patterns, so that ``max_new_tokens`` stays visible."""

from __future__ import annotations

import os
import subprocess
import sys

from calib.secrets import is_secret, override_secrets
from eval.loggers import REDACTED, redact
from tests.conftest import TINY_RUN

KEY = "sk-proj-4f9a1c77e2b64d0a9c1e"


def test_overrides_carrying_a_secret_are_found():
    overrides = [
        f"judge.api_key={KEY}",
        "+judge.password=hunter2",
        "+logger.wandb_token=abcdef1234567890abcdef12",
        f"judge.url=https://host/v1?key={KEY}",
        "judge.api_key_env=OPENAI_API_KEY",
        "generation.max_new_tokens=64",
        "+judge.max_tokens=8",
        "+model.pad_token=<pad>",
        "judge.api_key=${oc.env:OPENAI_API_KEY}",
        "-m",
    ]
    assert override_secrets(overrides) == [
        "judge.api_key",
        "judge.password",
        "logger.wandb_token",
        "judge.url",
    ]


def test_redaction_keeps_token_counts_and_hides_keys_by_name_and_by_look():
    config = {
        "generation": {"max_new_tokens": 96, "max_batch_tokens": 4096},
        "judge": {"max_tokens": 8, "api_key": "plain", "api_key_env": "OPENAI_API_KEY"},
        "note": f"called with {KEY}",
        "hf": {"token": "hf_abcdefghijklmnopqrstuvwxyz"},
    }
    assert redact(config, secrets=[]) == {
        "generation": {"max_new_tokens": 96, "max_batch_tokens": 4096},
        "judge": {"max_tokens": 8, "api_key": REDACTED, "api_key_env": "OPENAI_API_KEY"},
        "note": f"called with {REDACTED}",
        "hf": {"token": REDACTED},
    }
    assert not is_secret("max_new_tokens", 96) and not is_secret("tokenizer", "gpt2")


def test_calib_run_refuses_a_secret_before_writing_anything(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.cli.run",
            *TINY_RUN,
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"+judge.api_key={KEY}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "judge.api_key_env=OPENAI_API_KEY" in done.stderr
    assert KEY not in done.stderr + done.stdout, "the secret is never echoed"
    assert "Traceback" not in done.stderr
    assert not run_dir.exists() and not (tmp_path / "cache").exists(), "nothing was written"


def test_calib_judge_refuses_a_secret_override(tmp_path, capsys):
    from calib.cli.judge import main

    code = main(["eval", "judge=llm", f"judge.api_key={KEY}", f"out={tmp_path / 'out'}",
                 f"labels={tmp_path / 'labels.csv'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "judge.api_key_env=OPENAI_API_KEY" in err
    assert KEY not in err and not (tmp_path / "out").exists()
