"""The release check on one GPU (``bash scripts/gpu_check.sh``; ``--cpu``: the reduced CI mode).

Builds a random VLM of two families -- LLaVA (CLIP + Llama, :mod:`calib.model.tiny`) and
Qwen2.5-VL (:func:`tests.families.build_qwen2_5_vl`; needs torchvision, skipped without it) --
of about 1B parameters on CUDA in bfloat16 (tiny and float32 with ``--cpu``), and measures
through the project's own code paths:

* batched generation throughput, new tokens per second at batch 1, 8, 32, 64 (``--cpu``: 1, 4),
  every prompt generating exactly ``--new-tokens`` tokens;
* the out-of-memory back-off of :func:`calib.generation.generate.generate_in_batches`, forced by
  capping the process's GPU memory and asking for an oversize batch (GPU only);
* steering on/off at a fixed length: a vector added on the middle decoder layer by a forward
  hook, so the ratio is the hooks' cost, not different outputs;
* 20 LoRA steps (:func:`train.lora.train_adapter`) in bfloat16 with gradient checkpointing
  (``--cpu``: 2 steps, float32).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.families (the Qwen2.5-VL builder) lives in the checkout

from calib.generation.generate import generate_in_batches  # noqa: E402
from calib.model import VLM, load_vlm  # noqa: E402
from calib.model.tiny import build_tiny  # noqa: E402
from train.lora import LoraSettings, train_adapter  # noqa: E402
from train.lora_data import TrainingExample  # noqa: E402

#: ~1B parameters: a 2048-wide, 16-layer decoder (vision towers are small beside it).
GPU_TEXT = {"hidden_size": 2048, "num_layers": 16, "num_heads": 16, "num_kv_heads": 8}
GPU_TEXT_INTERMEDIATE = 5632


def llava_cfg(cpu: bool) -> dict[str, Any]:
    tiny = {
        "arch": "llava",
        "seed": 0,
        "vocab_size": 1024,
        "hidden_size": 64,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 128,
        "vision_hidden_size": 32,
        "vision_layers": 2,
        "vision_heads": 2,
        "image_size": 32,
        "patch_size": 4,
    }
    if not cpu:
        tiny.update(GPU_TEXT, intermediate_size=GPU_TEXT_INTERMEDIATE)
        tiny.update(vision_hidden_size=512, vision_layers=4, vision_heads=8, image_size=224)
        tiny.update(patch_size=14)
    return tiny


def model_cfg(name: str, folder: str | None, tiny: dict | None, cpu: bool) -> dict[str, Any]:
    return {
        "name": name,
        "id": folder,
        "revision": None,
        "dtype": "float32" if cpu else "bfloat16",
        "device": "cpu" if cpu else "cuda",
        "trust_remote_code": False,
        "tiny": tiny,
    }


def load_llava(work: Path, cpu: bool) -> VLM:
    tiny = llava_cfg(cpu)
    build_tiny(tiny, work)
    return load_vlm(model_cfg("llava", None, tiny, cpu), work)


def load_qwen(work: Path, cpu: bool) -> VLM | None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return None
    from tests.families import build_qwen2_5_vl

    text = None
    vision = None
    if not cpu:
        text = {
            "hidden_size": GPU_TEXT["hidden_size"],
            "num_hidden_layers": GPU_TEXT["num_layers"],
            "num_attention_heads": GPU_TEXT["num_heads"],
            "num_key_value_heads": GPU_TEXT["num_kv_heads"],
            "intermediate_size": GPU_TEXT_INTERMEDIATE,
        }
        vision = {"depth": 4, "hidden_size": 256, "intermediate_size": 1024, "num_heads": 4}
    folder = build_qwen2_5_vl(
        work / "qwen2.5-vl", text, vision, max_pixels=(32 if cpu else 224) ** 2
    )
    return load_vlm(model_cfg("qwen2.5-vl", str(folder), None, cpu), work)


def prompts(count: int, side: int) -> list[list[dict]]:
    """Image+text conversations, each with its own random image."""
    generator = torch.Generator().manual_seed(0)
    conversations = []
    for index in range(count):
        pixels = torch.randint(0, 256, (side, side, 3), generator=generator, dtype=torch.uint8)
        image = Image.fromarray(pixels.numpy())
        text = f"Question {index}: what does this picture show, and is it safe to do?"
        conversations.append(
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
                }
            ]
        )
    return conversations


def sync(vlm: VLM) -> None:
    if vlm.device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def fixed_length_seconds(vlm: VLM, conversations: list, new_tokens: int) -> float:
    """Seconds to generate exactly ``new_tokens`` for each conversation, as one batch."""
    batch = vlm.encode(conversations)
    sync(vlm)
    started = time.perf_counter()
    vlm.model.generate(
        **batch,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=vlm.tokenizer.pad_token_id,
    )
    sync(vlm)
    return time.perf_counter() - started


def throughput(vlm: VLM, sizes: list[int], new_tokens: int, side: int) -> dict[str, float]:
    fixed_length_seconds(vlm, prompts(1, side), 2)  # warm-up (kernels, allocator)
    figures = {}
    for size in sizes:
        seconds = fixed_length_seconds(vlm, prompts(size, side), new_tokens)
        figures[f"batch_{size}"] = round(size * new_tokens / seconds, 1)
    return figures


def oom_backoff(vlm: VLM, side: int) -> dict[str, Any]:
    """Cap the GPU memory, ask for an oversize batch, report the batch size it settled on."""
    if vlm.device.type != "cuda":
        return {"skipped": "no GPU"}
    total = torch.cuda.get_device_properties(vlm.device).total_memory
    used = torch.cuda.memory_allocated(vlm.device)
    fraction = min(1.0, (used + (2 << 30)) / total)  # 2 GiB above the weights
    torch.cuda.set_per_process_memory_fraction(fraction, vlm.device)
    sizes: list[int] = []
    conversations = prompts(512, side)
    try:
        generate_in_batches(
            vlm,
            conversations,
            list(range(len(conversations))),
            batch_size=512,
            decoding={"max_new_tokens": 64},
            commit=lambda batch, _outputs: sizes.append(len(batch)),
        )
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, vlm.device)
        torch.cuda.empty_cache()
    return {"asked": 512, "settled_on": min(sizes) if sizes else None, "batches": len(sizes)}


def steering_ratio(vlm: VLM, batch: int, new_tokens: int, side: int) -> float:
    """Generation time with a steering hook on the middle layer over time without."""
    conversations = prompts(batch, side)
    layer = vlm.decoder_layers[vlm.num_layers // 2]
    vector = torch.randn(vlm.hidden_size, device=vlm.device, dtype=vlm.dtype) * 0.01

    def add(_module, _args, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector

    fixed_length_seconds(vlm, conversations[:1], 2)
    off = fixed_length_seconds(vlm, conversations, new_tokens)
    handle = layer.register_forward_hook(add)
    try:
        on = fixed_length_seconds(vlm, conversations, new_tokens)
    finally:
        handle.remove()
    return round(on / off, 3)


def lora_steps(vlm: VLM, work: Path, steps: int, side: int) -> dict[str, Any]:
    conversations = prompts(16, side)
    examples = [
        TrainingExample(f"s{i}", "refusal", c, "I can't help with that: it could hurt someone.")
        for i, c in enumerate(conversations)
    ]
    settings = LoraSettings(
        r=16,
        alpha=32,
        dropout=0.0,
        target_pattern=r"layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
        train_vision=False,
        vision_target_pattern="",
        learning_rate=1e-4,
        epochs=1,
        max_steps=steps,
        train_batch_size=4 if vlm.device.type == "cpu" else 8,
        grad_accum=1,
        warmup_ratio=0.0,
        seed=0,
        precision="auto",  # bfloat16 on a GPU that supports it
        gradient_checkpointing=vlm.device.type == "cuda",
        logging_steps=1,
        save_steps=10_000,
        divergence_factor=100.0,
    )
    sync(vlm)
    started = time.perf_counter()
    adapter = train_adapter(vlm, examples, settings, cache_dir=work / "lora", progress=False)
    sync(vlm)
    seconds = time.perf_counter() - started
    card = json.loads((adapter / "adapter_card.json").read_text())
    return {
        "steps": card["training"]["global_step"],
        "seconds": round(seconds, 2),
        "steps_per_s": round(card["training"]["global_step"] / seconds, 3),
        "final_loss": card["training"]["final_loss"],
        "bf16": vlm.device.type == "cuda" and torch.cuda.is_bf16_supported(),
    }


def check(vlm: VLM, work: Path, cpu: bool) -> dict[str, Any]:
    side = 32 if cpu else 224
    new_tokens = 8 if cpu else 64
    params = sum(p.numel() for p in vlm.model.parameters())
    figures: dict[str, Any] = {"params_m": round(params / 1e6, 1), "dtype": str(vlm.dtype)}
    figures["tokens_per_s"] = throughput(vlm, [1, 4] if cpu else [1, 8, 32, 64], new_tokens, side)
    figures["oom_backoff"] = oom_backoff(vlm, side)
    figures["steering_on_over_off"] = steering_ratio(vlm, 4 if cpu else 32, new_tokens, side)
    figures["lora"] = lora_steps(vlm, work, 2 if cpu else 20, side)
    if vlm.device.type == "cuda":
        figures["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(vlm.device) / 2**30, 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="reduced mode: tiny models on CPU")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or use --cpu for the reduced mode")
    started = time.time()
    result: dict[str, Any] = {"mode": "cpu" if args.cpu else "gpu", "torch": torch.__version__}
    if not args.cpu:
        result["device"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        for name, loader in (("llava", load_llava), ("qwen2.5-vl", load_qwen)):
            vlm = loader(work, args.cpu)
            if vlm is None:
                result[name] = {"skipped": "needs torchvision (EXTRAS=dev,vision)"}
                continue
            result[name] = check(vlm, work / name, args.cpu)
            del vlm
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
