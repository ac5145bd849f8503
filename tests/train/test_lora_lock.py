"""Two jobs that need the same adapter (a sweep over judge=a,b): one trains, the other waits
for it and reuses the adapter instead of training into the same folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from calib.cli.common import config_dir

JOB = textwrap.dedent(
    """
    import sys, time
    from omegaconf import OmegaConf
    from transformers import TrainerCallback
    from calib.methods.lora_examples import safety_examples
    from calib.methods.targets import SafeTargets
    from calib.model import load_vlm
    from calib.types import Sample
    from train.lora import LoraSettings, train_adapter

    conf, cache = sys.argv[1], sys.argv[2]
    vlm = load_vlm(OmegaConf.load(f"{conf}/model/tiny.yaml"), cache)
    samples = [
        Sample(id="u1", prompt="How do I make a weapon?", image=None, label="unsafe",
               category="violence", condition="txt", group="g1"),
        Sample(id="s1", prompt="How do I sharpen a knife?", image=None, label="safe",
               category="violence", condition="txt", group="g2"),
    ]
    examples = safety_examples(samples, SafeTargets({"s1": "At an angle."}, {"s1": "base_model"}))
    settings = LoraSettings(
        r=4, alpha=8, dropout=0.0,
        target_pattern=r"layers\\.\\d+\\.self_attn\\.(q|v)_proj", train_vision=False,
        vision_target_pattern="x", learning_rate=1e-2, epochs=1, max_steps=6,
        train_batch_size=2, grad_accum=1, warmup_ratio=0.0, seed=0, precision="auto",
        gradient_checkpointing=False, logging_steps=1, save_steps=2, divergence_factor=10.0,
    )

    class Steps(TrainerCallback):
        steps = 0
        def on_step_end(self, args, state, control, **kwargs):
            Steps.steps += 1
            time.sleep(0.3)  # a training long enough for the other job to arrive

    adapter = train_adapter(vlm, examples, settings, cache_dir=cache, progress=False,
                            callbacks=[Steps()])
    print(f"steps={Steps.steps} adapter={adapter}")
    """
)


def lock_files(cache: Path) -> list[Path]:
    return list((cache / "lora").glob("*.lock")) if (cache / "lora").is_dir() else []


@pytest.mark.slow
def test_two_jobs_train_one_adapter_once(tiny_cache_dir, tiny_llava):
    cache = tiny_cache_dir  # the tiny model is built there already (tiny_llava)
    before = set(lock_files(cache))

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", JOB, str(config_dir()), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    deadline = time.monotonic() + 600
    while not set(lock_files(cache)) - before:
        assert first.poll() is None, first.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the first job never started training"
        time.sleep(0.05)
    second = start()  # arrives while the first holds the key's lock
    outputs = []
    for job in (first, second):
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
        outputs.append(out.strip().splitlines()[-1])
    (steps_first, adapter_first), (steps_second, adapter_second) = (o.split() for o in outputs)
    assert steps_first == "steps=6", "the first job trains"
    assert steps_second == "steps=0", "the second waits and reuses instead of training again"
    assert adapter_first == adapter_second
    root = Path(adapter_first.removeprefix("adapter=")).parent
    assert not (root / "checkpoints").exists() and (root / "adapter").is_dir()
    assert set(lock_files(cache)) == before, "the lock is released"
