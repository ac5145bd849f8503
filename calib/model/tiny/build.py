"""Small random vision-language models built from config alone.

A tiny model is a real transformers architecture (LLaVA, Idefics3 or Gemma3) with tiny
sizes and seeded random weights, a byte-level BPE tokenizer trained in a fraction of a
second on a corpus the project writes itself (:mod:`calib.model.tiny.corpus`), and a chat
template (:mod:`calib.model.tiny.templates`). :func:`build_tiny` saves model + processor with
``save_pretrained`` into ``<cache_dir>/tiny/<arch>-<hash>/`` (the hash covers the tiny config and
:data:`BUILDER_VERSION`, so a changed config builds anew), and :mod:`calib.model` loads
that folder through the same ``from_pretrained`` path as a real checkpoint.

The folder is built in a temporary sibling and renamed into place, so concurrent jobs or a
crash never leave a half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from calib.model.tiny.corpus import corpus_lines
from calib.model.tiny.templates import GEMMA3_TEMPLATE, IDEFICS3_TEMPLATE, LLAVA_TEMPLATE

BUILDER_VERSION = 2  # bump when the builder's output changes, so cached folders are rebuilt
ARCHS = ("llava", "idefics3", "gemma3")
MARKER_FILE = "tiny_config.json"  # written last into the folder: the config that built it


@dataclass(frozen=True)
class TinySpec:
    """The ``model.tiny`` config group (see ``conf/model/tiny*.yaml`` for each knob)."""

    arch: str
    seed: int
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vision_hidden_size: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TinySpec:
        """Validate a ``model.tiny`` mapping; every problem is reported at once."""
        names = [f.name for f in fields(cls)]
        given = dict(cfg.items())
        problems = [f"model.tiny.{k} is missing" for k in names if k not in given]
        problems += [f"model.tiny.{k} is not a known key" for k in given if k not in names]
        if not problems:
            spec = cls(**given)
            problems = spec._problems()
        if problems:
            raise ValueError("Invalid tiny model config: " + "; ".join(problems))
        return spec

    def _problems(self) -> list[str]:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"model.tiny.arch={self.arch!r} must be one of {', '.join(ARCHS)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            problems.append(
                "model.tiny.hidden_size must be divisible by num_heads, and num_heads by "
                f"num_kv_heads (got {self.hidden_size}, {self.num_heads}, {self.num_kv_heads})"
            )
        if self.vision_hidden_size % self.vision_heads:
            problems.append("model.tiny.vision_hidden_size must be divisible by vision_heads")
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % 2:
            problems.append(
                f"model.tiny.image_size={self.image_size} must be an even multiple of "
                f"patch_size={self.patch_size} (image tokens are pooled 2x2 for idefics3/gemma3)"
            )
        if self.vision_layers < 2:
            problems.append("model.tiny.vision_layers must be >= 2 (LLaVA reads layer -2)")
        return problems

    def key(self) -> str:
        """Short hash of the spec and the builder version: the cache folder's suffix."""
        payload = json.dumps({"builder": BUILDER_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_tiny(tiny_cfg: Mapping[str, Any], cache_dir: str | os.PathLike) -> Path:
    """Build (once) and return the folder holding a tiny model and its processor.

    Args:
        tiny_cfg: the ``model.tiny`` mapping (arch, seed, sizes).
        cache_dir: root of the cache; the model goes into ``<cache_dir>/tiny/<arch>-<hash>``.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    spec = TinySpec.from_config(tiny_cfg)
    root = Path(cache_dir) / "tiny"
    final = root / f"{spec.arch}-{spec.key()}"
    if (final / MARKER_FILE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        _save(spec, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER_FILE).is_file():  # not a concurrent builder that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def new_tiny(spec: TinySpec, lines: list[str] | None = None):
    """A fresh random model and its processor (not saved), the tokenizer trained on ``lines``.

    Args:
        spec: the tiny config.
        lines: the tokenizer's training text; None = the project's corpus
            (:func:`calib.model.tiny.corpus.corpus_lines`). The organism passes its world's text.

    Returns:
        ``(model, processor)``; the model is float32, in eval mode.
    """
    tokenizer = _train_tokenizer(spec, lines)
    processor = _PROCESSOR_BUILDERS[spec.arch](spec, tokenizer)
    config = _CONFIG_BUILDERS[spec.arch](spec, processor.tokenizer)
    return _init_model(config, spec.seed), processor


def _save(spec: TinySpec, folder: Path) -> None:
    model, processor = new_tiny(spec)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / MARKER_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))
    folder.chmod(0o755)  # mkdtemp creates it private; the cache is shared like any HF cache


# --- tokenizer --------------------------------------------------------------------------

_SPECIAL_TOKENS = {
    "llava": {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>", "extra": ["<image>"]},
    "idefics3": {
        "bos": "<|begin_of_text|>",
        "eos": "<end_of_utterance>",
        "pad": "<|pad|>",
        "unk": "<unk>",
        "extra": ["<|im_start|>", "<fake_token_around_image>", "<image>", "<global-img>"]
        + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
    },
    "gemma3": {
        "bos": "<bos>",
        "eos": "<eos>",
        "pad": "<pad>",
        "unk": "<unk>",
        "extra": [
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ],
    },
}


def _train_tokenizer(spec: TinySpec, lines: list[str] | None = None):
    """A byte-level BPE trained on ``lines`` (None: the project's corpus), for transformers."""
    from transformers import PreTrainedTokenizerFast

    special = _SPECIAL_TOKENS[spec.arch]
    names = [special["pad"], special["bos"], special["eos"], special["unk"], *special["extra"]]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=names,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_lines() if lines is None else lines, trainer=trainer)
    # Like the real tokenizers (Llama, Gemma), tokenizing with special tokens adds the BOS: a
    # template that does not write it (LLaVA-1.5's) relies on that.
    bos = special["bos"]
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bpe.token_to_id(bos))]
    )
    named = {}
    if spec.arch == "gemma3":  # Gemma3Processor reads these from the tokenizer
        named = {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        }
    elif spec.arch == "llava":
        named = {"image_token": "<image>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=special["bos"],
        eos_token=special["eos"],
        pad_token=special["pad"],
        unk_token=special["unk"],
        extra_special_tokens=special["extra"],
        padding_side="left",
        model_max_length=4096,
        **named,
    )


# --- processors -------------------------------------------------------------------------


def _llava_processor(spec: TinySpec, tokenizer):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    side = spec.image_size
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=LLAVA_TEMPLATE,
    )


def _idefics3_processor(spec: TinySpec, tokenizer):
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    side = spec.image_size
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": side},
        max_image_size={"longest_edge": side},
        do_image_splitting=False,
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=_pooled_image_tokens(spec),
        chat_template=IDEFICS3_TEMPLATE,
    )


def _gemma3_processor(spec: TinySpec, tokenizer):
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    side = spec.image_size
    image_processor = Gemma3ImageProcessorPil(size={"height": side, "width": side})
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=_pooled_image_tokens(spec),
        chat_template=GEMMA3_TEMPLATE,
    )


_PROCESSOR_BUILDERS = {
    "llava": _llava_processor,
    "idefics3": _idefics3_processor,
    "gemma3": _gemma3_processor,
}


# --- model configs ----------------------------------------------------------------------


def _pooled_image_tokens(spec: TinySpec) -> int:
    """Image tokens per image for idefics3/gemma3: the patch grid pooled 2x2."""
    return (spec.image_size // spec.patch_size // 2) ** 2


def _token_ids(tokenizer) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _llama_text(spec: TinySpec, tokenizer, eos_ids: list[int] | None = None):
    from transformers import LlamaConfig

    ids = _token_ids(tokenizer)
    if eos_ids is not None:
        ids["eos_token_id"] = eos_ids
    return LlamaConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=4096,
        **ids,
    )


def _vision_sizes(spec: TinySpec) -> dict[str, int]:
    return {
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": 2 * spec.vision_hidden_size,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
    }


def _llava_config(spec: TinySpec, tokenizer):
    from transformers import CLIPVisionConfig, LlavaConfig

    image_token = tokenizer.convert_tokens_to_ids("<image>")
    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            projection_dim=spec.vision_hidden_size, **_vision_sizes(spec)
        ),
        text_config=_llama_text(spec, tokenizer),
        image_token_index=image_token,
        image_seq_length=(spec.image_size // spec.patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def _idefics3_config(spec: TinySpec, tokenizer):
    from transformers import Idefics3Config, Idefics3VisionConfig

    return Idefics3Config(
        vision_config=Idefics3VisionConfig(**_vision_sizes(spec)),
        text_config=_llama_text(spec, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tokenizer.pad_token_id,
    )


def _gemma3_config(spec: TinySpec, tokenizer):
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    head_dim = spec.hidden_size // spec.num_heads
    ids = _token_ids(tokenizer)
    ids["eos_token_id"] = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    text = Gemma3TextConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=512,
        max_position_embeddings=4096,
        **ids,
    )
    return Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(**_vision_sizes(spec)),
        mm_tokens_per_image=_pooled_image_tokens(spec),
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )


_CONFIG_BUILDERS = {
    "llava": _llava_config,
    "idefics3": _idefics3_config,
    "gemma3": _gemma3_config,
}


def _init_model(config, seed: int):
    """Random weights, deterministic for a seed (fp32; the loader casts as configured)."""
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        if config.model_type == "gemma3":
            # Gemma3 initialises its image projection to zeros: images would not reach the
            # text model at all. Draw it like the other weights so images matter.
            projection = model.model.multi_modal_projector.mm_input_projection_weight
            torch.nn.init.normal_(projection, std=config.initializer_range)
    eos = config.get_text_config().eos_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = config.get_text_config().pad_token_id
    return model.eval()
