"""Parallel jobs that need the same generations (every job of a sweep needs the baseline):
one generates, the others wait for it and read its answers from the cache."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from calib.cli.common import config_dir
from calib.generation.cache import CACHE_DIR, CLAIMS_DIR

JOB = textwrap.dedent(
    """
    import sys
    from omegaconf import OmegaConf
    from calib.generation.cache import GenerationCache
    from calib.generation.generate import generate
    from calib.methods.none import NoMethod
    from calib.model import load_vlm
    from calib.types import Sample

    conf, models, cache_dir = sys.argv[1:4]
    vlm = load_vlm(OmegaConf.load(f"{conf}/model/tiny.yaml"), models)
    samples = [
        Sample(id=f"q{i}", prompt=f"Question number {i} about the picture?", image=None,
               label="safe", category="c", condition="txt", group=f"g{i}")
        for i in range(12)
    ]
    with GenerationCache.in_dir(cache_dir) as cache:
        done = generate(vlm, NoMethod(), samples, batch_size=1, cache=cache, progress=False,
                        decoding={"max_new_tokens": 48, "do_sample": False})
    print(f"generated={done.generated} cached={done.cached}")
    """
)


def claims(cache: Path) -> list[Path]:
    folder = cache / CACHE_DIR / CLAIMS_DIR
    return list(folder.glob("*.lock")) if folder.is_dir() else []


@pytest.mark.slow
def test_the_second_job_waits_and_reuses_instead_of_generating(
    tiny_cache_dir, tiny_llava, tmp_path
):
    cache = tmp_path / "cache"

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", JOB, str(config_dir()), str(tiny_cache_dir), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    deadline = time.monotonic() + 600
    while not claims(cache):
        assert first.poll() is None, first.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the first job never started generating"
        time.sleep(0.02)
    second = start()
    results = []
    for job in (first, second):
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
        results.append(out.strip().splitlines()[-1])
    assert results == ["generated=12 cached=0", "generated=0 cached=12"]
    assert not claims(cache), "claims are released"
