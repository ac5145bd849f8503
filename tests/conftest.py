"""Shared fixtures: the three tiny VLMs, built once per test session, a few images, and the
reference data of ``../shared/data`` (VSCBench's spreadsheets; tests skip without them).

``tiny_llava``, ``tiny_idefics3`` and ``tiny_gemma3`` are session-scoped ``VLM`` objects
loaded from ``conf/model/tiny*.yaml`` into one session cache folder (``tiny_cache_dir``);
``tiny_vlm`` runs a test once per architecture. They are shared: a test that installs hooks
or adapters on one must remove them again (as every method's ``active()`` does).

``vscbench_sheets`` is ``../shared/data/vscbench`` (tests skip when it is absent: a fresh
clone has no ``../shared``). ``synthetic_root`` is a stand-in VSCBench archive (the real
spreadsheets plus tiny placeholder images, built by ``eval.data.vscbench.build_synthetic_root``),
shared by the session and never modified; ``broken_root`` is a second one with one image
removed and one truncated (``broken_files``).
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

from calib.cli.common import config_dir
from calib.model import VLM, load_vlm
from eval.data.vscbench import (
    IMAGE_CENTRIC_DIR,
    TEXT_CENTRIC_DIR,
    build_synthetic_root,
    read_image_centric,
    read_text_centric,
)

CONF_DIR = config_dir()
#: The reference data of the project (never copied into it): ../shared/data from the repo root.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_MODELS = {"llava": "tiny", "idefics3": "tiny_idefics3", "gemma3": "tiny_gemma3"}
#: Overrides that pin a run to the random tiny model and the embedded sample sets: the
#: default run is the organism (conf/config.yaml); tests of the machinery use these.
TINY_RUN = ["model=tiny", "data=sample", "utility=sample"]


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


SHARED_VSCBENCH = SHARED_DATA / "vscbench"


@pytest.fixture(scope="session")
def vscbench_sheets() -> Path:
    if not (SHARED_VSCBENCH / "vscbench_image_centric.xlsx").is_file():
        pytest.skip(f"VSCBench spreadsheets not found at {SHARED_VSCBENCH} (../shared/data)")
    return SHARED_VSCBENCH


@pytest.fixture(scope="session")
def synthetic_root(vscbench_sheets, tmp_path_factory) -> Path:
    return build_synthetic_root(tmp_path_factory.mktemp("vscbench_ok"), vscbench_sheets)


@pytest.fixture(scope="session")
def broken_files(vscbench_sheets) -> dict[str, str]:
    """Paths (relative to the root) of the image to remove and the one to truncate."""
    image_row = read_image_centric(vscbench_sheets / "vscbench_image_centric.xlsx").iloc[0]
    text_row = read_text_centric(vscbench_sheets / "vscbench_text_centric.xlsx").iloc[1]
    return {
        "removed": f"{TEXT_CENTRIC_DIR}/typography/{text_row['typography_img']}",
        "truncated": f"{IMAGE_CENTRIC_DIR}/{image_row['Category']}/{image_row['unsafe_img_1']}",
    }


@pytest.fixture(scope="session")
def broken_root(vscbench_sheets, broken_files, tmp_path_factory) -> Path:
    root = build_synthetic_root(tmp_path_factory.mktemp("vscbench_broken"), vscbench_sheets)
    (root / broken_files["removed"]).unlink()
    truncated = root / broken_files["truncated"]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return root
