"""Shared fixtures: the three tiny VLMs, built once per test session, and a few images.

``tiny_llava``, ``tiny_idefics3`` and ``tiny_gemma3`` are session-scoped ``VLM`` objects
loaded from ``conf/model/tiny*.yaml`` into one session cache folder (``tiny_cache_dir``);
``tiny_vlm`` runs a test once per architecture. They are shared: a test that installs hooks
or adapters on one must remove them again (as every method's ``active()`` does).
"""

from __future__ import annotations

import os

# Tests run in parallel workers (pytest -n 2) on small machines: one BLAS/OpenMP thread per
# worker avoids oversubscription, which slows tiny models by orders of magnitude. Set before
# torch is imported; subprocesses that tests start inherit it. Nothing may reach a network.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from calib.models import VLM, load_vlm

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TINY_MODELS = {"llava": "tiny", "idefics3": "tiny_idefics3", "gemma3": "tiny_gemma3"}


def tiny_model_cfg(arch: str) -> DictConfig:
    """The ``model`` config group of the tiny model of an architecture (llava, idefics3, gemma3)."""
    return OmegaConf.load(CONF_DIR / "model" / f"{TINY_MODELS[arch]}.yaml")


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory) -> Path:
    """The session's cache folder (pass it as ``paths.cache_dir`` to reuse the tiny models)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_llava(tiny_cache_dir) -> VLM:
    return load_vlm(tiny_model_cfg("llava"), tiny_cache_dir)


@pytest.fixture(scope="session")
def tiny_idefics3(tiny_cache_dir) -> VLM:
    return load_vlm(tiny_model_cfg("idefics3"), tiny_cache_dir)


@pytest.fixture(scope="session")
def tiny_gemma3(tiny_cache_dir) -> VLM:
    return load_vlm(tiny_model_cfg("gemma3"), tiny_cache_dir)


@pytest.fixture(params=list(TINY_MODELS), ids=lambda arch: f"tiny_{arch}")
def tiny_vlm(request) -> VLM:
    """Each tiny VLM in turn (llava, idefics3, gemma3)."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> list[Path]:
    """Three small random PNG images of different sizes and aspect ratios."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate([(40, 50), (24, 36), (64, 64)]):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        path = folder / f"image_{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
