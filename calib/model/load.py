"""Loading any Hugging Face VLM as a :class:`~calib.model.vlm.VLM`.

``load_vlm(cfg.model, cfg.paths.cache_dir)`` loads a hub checkpoint or local folder with
``AutoModelForImageTextToText`` + ``AutoProcessor``, or, when ``model.id`` is null, the
organism's shipped weights (a config with ``model.organism``, :mod:`calib.model.organism`) or
the tiny random model described by ``model.tiny`` (:mod:`calib.model.tiny`), the same way.
The :class:`VLM` renders chats, encodes them (left padding, images loaded from the
paths inside the messages), generates in batches and reads the residual stream.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from calib.errors import ModelLoadError
from calib.model.organism import WEIGHTS_DIR
from calib.model.tiny import build_tiny
from calib.model.vlm import VLM

MODEL_KEYS = ("name", "id", "revision", "dtype", "device", "trust_remote_code")
TINY_KEY = "tiny"  # only in the configs of models built from config (conf/model/tiny*.yaml)
ORGANISM_KEY = "organism"  # only in conf/model/organism.yaml: id null = the shipped weights
DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_vlm(model_cfg: Mapping[str, Any], cache_dir: str | os.PathLike) -> VLM:
    """Load the VLM a ``model`` config group describes.

    Args:
        model_cfg: the ``model`` group: name, id, revision, dtype, device,
            trust_remote_code, and ``tiny`` for random models (see ``conf/model/*.yaml``).
        cache_dir: where tiny models are built (the run passes ``paths.cache_dir``).

    Raises:
        ValueError: a key is missing or has an invalid value (all problems at once).
        ModelLoadError: ``model.id`` is not an existing folder nor a reachable hub model.
    """
    _check_model_cfg(model_cfg)
    device = resolve_device(model_cfg["device"])
    dtype = DTYPES[model_cfg["dtype"]]
    model_id, revision = model_cfg["id"], model_cfg["revision"]
    if model_id is None and model_cfg.get(ORGANISM_KEY) is not None:
        source, revision = str(shipped_organism()), None
    elif model_id is None:
        source, revision = str(build_tiny(model_cfg[TINY_KEY], cache_dir)), None
    elif _is_local(str(model_id)):
        source = str(Path(str(model_id)).expanduser())
        if not Path(source).is_dir():
            raise ModelLoadError(
                f"model.id={model_id!r} is not an existing folder. Point model.id at a saved "
                "checkpoint folder or a hub id (e.g. llava-hf/llava-1.5-7b-hf), or use model=tiny."
            )
    else:
        source = str(model_id)
    kwargs = {"revision": revision} if revision is not None else {}
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            dtype=dtype,
            trust_remote_code=model_cfg["trust_remote_code"],
            device_map=str(device),  # load straight onto the device (no CPU copy first)
            **kwargs,
        )
        processor = AutoProcessor.from_pretrained(
            source, trust_remote_code=model_cfg["trust_remote_code"], **kwargs
        )
    except (OSError, ValueError) as err:
        hint = (
            "Is it a folder written by save_pretrained (model and processor)?"
            if Path(source).is_dir()
            else "Is the id right, and is the model in the local HF cache or the hub reachable "
            "(HF_HUB_OFFLINE=1 fails fast without network)?"
        )
        raise ModelLoadError(
            f"model.id={model_id!r} (revision={revision!r}) could not be loaded: {err}\n{hint} "
            "Fix model.id, download the model beforehand (`hf download <id>`), or use model=tiny."
        ) from err
    model.eval()
    if Path(source).is_dir():
        identity = f"local:{folder_identity(Path(source))}"
    else:
        identity = f"{source}@{_hub_commit(source, revision) or revision or 'unpinned'}"
    return VLM(model, processor, name=model_cfg["name"], identity=identity, device=device)


def shipped_organism() -> Path:
    """The folder of the organism's shipped weights.

    Raises:
        ModelLoadError: the weights are missing (a source checkout before training).
    """
    if not (WEIGHTS_DIR / "config.json").is_file():
        raise ModelLoadError(
            f"model=organism: no shipped weights in {WEIGHTS_DIR}. Train them with "
            "`calib-organism train`, or point model.id at a folder it wrote."
        )
    return WEIGHTS_DIR


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of the cached snapshot a hub model was loaded from (no network)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    match = (
        re.search(r"snapshots/([0-9a-f]{40})/", Path(path).as_posix())
        if isinstance(path, str)
        else None
    )
    return match.group(1) if match else None


def _check_model_cfg(model_cfg: Mapping[str, Any]) -> None:
    problems = [f"model.{key} is missing" for key in MODEL_KEYS if key not in model_cfg]
    if not problems:
        if model_cfg["dtype"] not in DTYPES:
            problems.append(
                f"model.dtype={model_cfg['dtype']!r} must be one of {', '.join(DTYPES)}"
            )
        if model_cfg["device"] != "auto":
            try:
                torch.device(model_cfg["device"])
            except (RuntimeError, TypeError):
                problems.append(
                    f"model.device={model_cfg['device']!r} is not a device: use auto, cpu, cuda, "
                    "cuda:1, ..."
                )
        if (
            model_cfg["id"] is None
            and model_cfg.get(TINY_KEY) is None
            and model_cfg.get(ORGANISM_KEY) is None
        ):
            problems.append("model.id and model.tiny are both null: set one (or use model=tiny)")
    if problems:
        raise ValueError("Invalid model config: " + "; ".join(problems))


def _is_local(model_id: str) -> bool:
    """A folder path rather than a hub id (``name`` or ``org/name``)."""
    return Path(model_id).expanduser().exists() or not _HUB_ID.match(model_id)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def folder_identity(folder: Path, sample_bytes: int = 1 << 16, full_below: int = 1 << 22) -> str:
    """A cheap content hash of a checkpoint folder, used in cache keys.

    Hashes every file's relative path and size, the whole content of files under
    ``full_below`` bytes (configs, tokenizer, tiny weights), and for larger files (weights)
    their first and last MiB plus 16 evenly spaced chunks of ``sample_bytes``. Copying or
    touching a folder keeps its identity (no mtimes); re-trained weights change it.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        size = path.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with path.open("rb") as handle:
            if size <= full_below:
                digest.update(handle.read())
                continue
            offsets = [0, size - (1 << 20)] + [size * k // 17 for k in range(1, 17)]
            for offset in offsets:
                handle.seek(offset)
                digest.update(handle.read(1 << 20 if offset in offsets[:2] else sample_bytes))
    return digest.hexdigest()[:16]
