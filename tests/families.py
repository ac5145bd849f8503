"""Tiny random models of the real VLM families, for the family tests.

Each is built from config with the family's own model class, processor class, special tokens
and its checkpoint's real chat template (:mod:`tests.hub_templates`; PaliGemma ships none),
saved with ``save_pretrained`` and then loaded the way a user loads a checkpoint:
``model=<preset> model.id=<folder>``. Sizes are tiny (a 64-wide, 4-layer decoder), weights are
seeded. The tokenizer is a byte-level BPE trained on the project's corpus with the family's
special tokens, adding the BOS like the real tokenizers do.

:data:`FAMILIES` maps a family to its builder and preset; :data:`NEEDS_TORCHVISION` lists the
families whose processors import torchvision (tested in the vision lane, ``pytest -m vision``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from calib.model.tiny.corpus import corpus_lines
from tests import hub_templates

TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


def tokenizer(bos: str | None, eos: str, pad: str, extra: list[str], **named: Any):
    """A byte-level BPE with these special tokens (BOS added when special tokens are; Qwen's
    tokenizers have none)."""
    from transformers import PreTrainedTokenizerFast

    names = [pad, *([bos] if bos else []), eos, "<unk>", *extra]
    names = list(dict.fromkeys(names))
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=names,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_lines(), trainer=trainer)
    if bos:
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bpe.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>",
        extra_special_tokens=[t for t in extra if t not in (bos, eos, pad)],
        padding_side="left",
        model_max_length=4096,
        **named,
    )


def _ids(tok, eos: list[str] | None = None) -> dict[str, Any]:
    stops = [tok.convert_tokens_to_ids(t) for t in (eos or [tok.eos_token])]
    return {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": stops if len(stops) > 1 else stops[0],
        "pad_token_id": tok.pad_token_id,
    }


def _save(model_config, processor, folder: Path, stops: list[int] | int) -> Path:
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(model_config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # Mllama initialises its cross-attention gates to 0 (tanh(0) = 0): images would not
            # reach the text model at all. Open them so that images matter, as in a trained one.
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --- the families -------------------------------------------------------------------------


def build_mllama(folder: Path) -> Path:
    """Llama-3.2-Vision: MllamaForConditionalGeneration, cross-attention layer 1 of 4."""
    from transformers import MllamaConfig, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tok = tokenizer(
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|finetune_right_pad_id|>",
        [
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|image|>",
            "<|python_tag|>",
            "<|eom_id|>",
        ],
    )
    image_processor = MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=1)
    processor = MllamaProcessor(image_processor, tok, chat_template=hub_templates.MLLAMA)
    stops = ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    ids = _ids(tok, stops)
    config = MllamaConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_global_layers": 1,
            "attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "max_num_tiles": 1,
            "intermediate_layers_indices": [0],
            "vision_output_dim": 64,  # hidden_size x (1 + len(intermediate_layers_indices))
            "supported_aspect_ratios": [[1, 1]],
        },
        text_config={**TEXT, **ids, "cross_attention_layers": [1]},
        image_token_index=tok.convert_tokens_to_ids("<|image|>"),
    )
    return _save(config, processor, folder, ids["eos_token_id"])


def build_paligemma(folder: Path) -> Path:
    """PaliGemma 2: PaliGemmaForConditionalGeneration (SigLIP + Gemma2), no chat template."""
    from transformers import PaliGemmaConfig, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = tokenizer("<bos>", "<eos>", "<pad>", ["<image>"], image_token="<image>")
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16  # (32 / 8) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    ids = _ids(tok)
    config = PaliGemmaConfig(
        vision_config={**VISION, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        text_config={
            "model_type": "gemma2",
            **TEXT,
            **ids,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 512,
        },
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=64,
    )
    return _save(config, processor, folder, ids["eos_token_id"])


def build_llava_next(folder: Path) -> Path:
    """LLaVA-NeXT (v1.6 Mistral): LlavaNextForConditionalGeneration, any-resolution tiles."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextProcessor, MistralConfig
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    tok = tokenizer("<s>", "</s>", "<pad>", ["<image>"], image_token="<image>")
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=hub_templates.LLAVA_NEXT_MISTRAL,
    )
    ids = _ids(tok)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            **VISION, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32
        ),
        text_config=MistralConfig(**TEXT, **ids, sliding_window=None),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=16,
    )
    return _save(config, processor, folder, ids["eos_token_id"])


_QWEN_TOKENS = [
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen_processor(processor_class, template: str, max_pixels: int = 32 * 32):
    """Qwen2-VL's processor layout: 8-pixel patches merged 2x2, images kept small."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tok = tokenizer(None, "<|im_end|>", "<|endoftext|>", _QWEN_TOKENS)
    sizes = {"patch_size": 8, "merge_size": 2, "temporal_patch_size": 2}
    pixels = {"min_pixels": 16 * 16, "max_pixels": max_pixels}
    return processor_class(
        image_processor=Qwen2VLImageProcessor(**sizes, **pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**sizes, **pixels),
        chat_template=template,
    )


def _qwen_ids(tok) -> dict[str, Any]:
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def _qwen_text(tok, text: dict[str, Any] | None = None) -> dict[str, Any]:
    ids = _ids(tok, ["<|im_end|>", "<|endoftext|>"])
    ids["bos_token_id"] = None
    sizes = {**TEXT, **(text or {})}
    # Multimodal RoPE: the sections split head_dim / 2 over time, height and width.
    half = sizes["hidden_size"] // sizes["num_attention_heads"] // 2
    section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    rope = {"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0}
    return {**sizes, **ids, "rope_parameters": rope}


def build_qwen2_vl(folder: Path) -> Path:
    """Qwen2-VL: Qwen2VLForConditionalGeneration, Qwen2VLProcessor (needs torchvision)."""
    from transformers import Qwen2VLConfig, Qwen2VLProcessor

    processor = _qwen_processor(Qwen2VLProcessor, hub_templates.QWEN2_VL)
    tok = processor.tokenizer
    text = _qwen_text(tok)
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "patch_size": 8}
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    return _save(config, processor, folder, text["eos_token_id"])


def build_qwen2_5_vl(
    folder: Path,
    text: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
    max_pixels: int = 32 * 32,
) -> Path:
    """Qwen2.5-VL: Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor (torchvision).

    ``text`` / ``vision`` override the tiny sizes (``scripts/gpu_check.py`` builds ~1B)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor

    processor = _qwen_processor(Qwen2_5_VLProcessor, hub_templates.QWEN2_VL, max_pixels)
    tok = processor.tokenizer
    text = _qwen_text(tok, text)
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": text["hidden_size"],
        "patch_size": 8,
        "window_size": 32,
        "fullatt_block_indexes": [1],
        **(vision or {}),
    }
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    return _save(config, processor, folder, text["eos_token_id"])


def _qwen2_text(tok) -> dict[str, Any]:
    """A Qwen2 decoder config (LLaVA-OneVision, InternVL3), no BOS like Qwen's tokenizers."""
    ids = _ids(tok, ["<|im_end|>", "<|endoftext|>"])
    ids["bos_token_id"] = None
    return {"model_type": "qwen2", **TEXT, **ids}


def build_llava_onevision(folder: Path) -> Path:
    """LLaVA-OneVision: LlavaOnevisionForConditionalGeneration (SigLIP + Qwen2), torchvision."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tok = tokenizer(
        None,
        "<|im_end|>",
        "<|endoftext|>",
        ["<|im_start|>", "<image>", "<video>"],
        image_token="<image>",
        video_token="<video>",
    )
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    sizes = {"size": {"height": 32, "width": 32}, "image_grid_pinpoints": pinpoints}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(**sizes),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}),
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=hub_templates.LLAVA_ONEVISION,
    )
    text = _qwen2_text(tok)
    config = LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            **VISION,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return _save(config, processor, folder, text["eos_token_id"])


def build_internvl(folder: Path) -> Path:
    """InternVL3 (transformers-native -hf): InternVLForConditionalGeneration, torchvision."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    tok = tokenizer(
        None,
        "<|im_end|>",
        "<|endoftext|>",
        ["<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        start_image_token="<img>",
        end_image_token="</img>",
        context_image_token="<IMG_CONTEXT>",
        video_token="<video>",
    )
    image_processor = GotOcr2ImageProcessor(
        size={"height": 32, "width": 32}, crop_to_patches=False, max_patches=1
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=InternVLVideoProcessor(size={"height": 32, "width": 32}),
        image_seq_length=4,  # (32 / 8) ** 2 patches, pixel-shuffled by 0.5 x 0.5
        chat_template=hub_templates.INTERNVL,
    )
    text = _qwen2_text(tok)
    config = InternVLConfig(
        vision_config={
            **VISION,
            "num_attention_heads": 2,
            "image_size": [32, 32],
            "patch_size": [8, 8],
        },
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
    )
    return _save(config, processor, folder, text["eos_token_id"])


def build_smolvlm2(folder: Path) -> Path:
    """SmolVLM2: SmolVLMForConditionalGeneration, SmolVLMProcessor (torchvision, num2words)."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tok = tokenizer(
        "<|im_start|>",
        "<end_of_utterance>",
        "<|im_end|>",
        ["<fake_token_around_image>", "<image>", "<global-img>", "<video>"]
        + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
        fake_image_token="<fake_token_around_image>",
        image_token="<image>",
        global_image_token="<global-img>",
        end_of_utterance_token="<end_of_utterance>",
    )
    side = {"longest_edge": 32}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            size=side, max_image_size=side, do_image_splitting=False
        ),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(size=side, max_image_size=side),
        image_seq_len=4,  # (32 / 8) ** 2 patches pooled 2 x 2
        chat_template=hub_templates.SMOLVLM2,
    )
    ids = _ids(tok)
    config = SmolVLMConfig(
        vision_config={**VISION, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", **TEXT, **ids},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    return _save(config, processor, folder, ids["eos_token_id"])


@dataclass(frozen=True)
class Family:
    build: Callable[[Path], Path]
    preset: str  # conf/model/<preset>.yaml: the family's most used checkpoint


FAMILIES: dict[str, Family] = {
    "llava-next": Family(build_llava_next, "llava-next-7b"),
    "mllama": Family(build_mllama, "llama-3.2-11b-vision"),
    "paligemma": Family(build_paligemma, "paligemma2-3b-mix"),
    "qwen2-vl": Family(build_qwen2_vl, "qwen2-vl-2b"),
    "qwen2.5-vl": Family(build_qwen2_5_vl, "qwen2.5-vl-7b"),
    "llava-onevision": Family(build_llava_onevision, "llava-onevision-7b"),
    "internvl": Family(build_internvl, "internvl3-8b"),
    "smolvlm2": Family(build_smolvlm2, "smolvlm2-2.2b"),
}
NEEDS_TORCHVISION: tuple[str, ...] = (
    "qwen2-vl",
    "qwen2.5-vl",
    "llava-onevision",
    "internvl",
    "smolvlm2",
)
