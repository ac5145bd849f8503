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
import logging
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

log = logging.getLogger("calib.model.load")

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
        ModelLoadError: ``model.id`` is not an existing folder nor a reachable hub model, is
            not a vision-language model, its processor needs a missing library
            (torchvision), it has no chat template, or it cannot encode an image+text or a
            text-only conversation. One paragraph naming the fix, raised in seconds: the
            checks run before the weights load (except the encoding one, right after).
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
    trust = bool(model_cfg["trust_remote_code"])
    # Fail fast: the architecture, the processor and its chat template are checked before
    # the weights load (seconds), and one encoded batch before any data or fitting.
    model_type = check_architecture(source, model_id, trust, kwargs)
    processor = load_processor(source, model_id, model_type, trust, kwargs)
    ensure_chat_template(processor, model_id, model_type)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            dtype=dtype,
            trust_remote_code=trust,
            device_map=str(device),  # load straight onto the device (no CPU copy first)
            **kwargs,
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"model.id={model_id!r} (revision={revision!r}): the weights could not be loaded: "
            f"{_first_line(err)}. {_source_hint(source)} Fix model.id, download the model "
            "beforehand (`hf download <id>`), or use model=tiny."
        ) from err
    model.eval()
    if Path(source).is_dir():
        identity = f"local:{folder_identity(Path(source))}"
    else:
        identity = f"{source}@{_hub_commit(source, revision) or revision or 'unpinned'}"
    vlm = VLM(model, processor, name=model_cfg["name"], identity=identity, device=device)
    check_encodes(vlm, model_id)
    return vlm


# --- fail-fast checks (before the weights, before the data) --------------------------------

#: Chat template given to checkpoints that ship none (PaliGemma): the text parts of every
#: message, one message a line, image parts as the processor's ``<image>`` placeholder (the
#: processor then adds BOS after the images and the closing newline itself).
PLAIN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)
#: Model types that may ship without a chat template and get :data:`PLAIN_TEMPLATE`.
PLAIN_TEMPLATE_TYPES = ("paligemma",)
VISION_EXTRA_FIX = (
    "Install the vision extra: `EXTRAS=dev,vision bash scripts/install.sh` (a separate "
    ".venv-vision with torch==2.14.1 + torchvision==0.29.1 + num2words on CPU), or "
    "`pip install torchvision==<the release matching your torch> num2words`."
)


def _first_line(err: BaseException) -> str:
    """The first sentence of an error's message (library messages run to paragraphs)."""
    lines = str(err).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


def _source_hint(source: str) -> str:
    if Path(source).is_dir():
        return "Is it a folder written by save_pretrained (model and processor)?"
    return (
        "Is the id right, and is the model in the local HF cache or the hub reachable "
        "(HF_HUB_OFFLINE=1 fails fast without network)?"
    )


def check_architecture(
    source: str, model_id: Any, trust_remote_code: bool, kwargs: Mapping[str, Any]
) -> str:
    """The checkpoint's ``model_type``, once its config is known to be an image-text-to-text
    model (read from ``config.json`` alone: no weights are loaded).

    Raises:
        ModelLoadError: no readable config, or a model type that is not a VLM.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(
            source, trust_remote_code=trust_remote_code, **dict(kwargs)
        )
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"model.id={model_id!r}: its config could not be read: {_first_line(err)}. "
            f"{_source_hint(source)} Fix model.id, download the model beforehand "
            "(`hf download <id>`), or use model=tiny."
        ) from err
    model_type = str(getattr(config, "model_type", ""))
    remote = "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {})
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not remote:
        raise ModelLoadError(
            f"model.id={model_id!r} is a {model_type or 'unknown'!r} model "
            f"({type(config).__name__}), which transformers cannot load as an "
            "image-text-to-text model: vsc-calib calibrates vision-language models. Point "
            "model.id at a VLM checkpoint (the README's family matrix lists the tested "
            "families and their presets, e.g. model=qwen2.5-vl-7b), or use model=tiny."
        )
    return model_type


def load_processor(
    source: str, model_id: Any, model_type: str, trust_remote_code: bool, kwargs: Mapping[str, Any]
):
    """``AutoProcessor.from_pretrained``, with a missing optional library (torchvision,
    num2words) reported as a ModelLoadError that says what to install."""
    try:
        return AutoProcessor.from_pretrained(
            source, trust_remote_code=trust_remote_code, **dict(kwargs)
        )
    except ImportError as err:
        raise ModelLoadError(
            f"model.id={model_id!r} ({model_type}): its processor needs a library this "
            f"environment lacks: {_first_line(err)}. {VISION_EXTRA_FIX}"
        ) from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"model.id={model_id!r} ({model_type}): the processor could not be loaded: "
            f"{_first_line(err)}. {_source_hint(source)} Fix model.id or use model=tiny."
        ) from err


def ensure_chat_template(processor, model_id: Any, model_type: str) -> None:
    """A chat template must be there: PaliGemma (which ships none) gets
    :data:`PLAIN_TEMPLATE` with a warning; any other model without one is refused."""
    if getattr(processor, "chat_template", None):
        return
    if model_type in PLAIN_TEMPLATE_TYPES:
        log.warning(
            "model.id=%r (%s) has no chat template: using the plain one of "
            "calib.model.load.PLAIN_TEMPLATE (the text of each message, images first)",
            model_id,
            model_type,
        )
        processor.chat_template = PLAIN_TEMPLATE
        return
    raise ModelLoadError(
        f"model.id={model_id!r} ({model_type}) has no chat template, so prompts cannot be "
        "rendered. Use the instruction-tuned checkpoint of the family (its processor carries "
        "chat_template.jinja), or add one: `processor.chat_template = ...; "
        "processor.save_pretrained(<folder>)` and set model.id=<folder>."
    )


def check_encodes(vlm: VLM, model_id: Any) -> None:
    """Encode one image+text and one text-only conversation, as every run will: a processor
    or template that cannot fails here, before data preparation and fitting."""
    from PIL import Image

    image = Image.new("RGB", (32, 32), (128, 64, 32))
    probes = {
        "image+text": [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi?"}],
            }
        ],
        "text-only": [{"role": "user", "content": [{"type": "text", "text": "Hi?"}]}],
    }
    for kind, conversation in probes.items():
        try:
            vlm.encode([conversation])
        except Exception as err:  # any failure here is the model's, reported as one
            raise ModelLoadError(
                f"model.id={model_id!r} ({vlm.model.config.model_type}) loaded, but a "
                f"one-sample {kind} batch cannot be encoded: {type(err).__name__}: "
                f"{_first_line(err)}. Check the checkpoint's processor and chat template "
                "(they must render and tokenize an image and a text part)."
            ) from err


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
