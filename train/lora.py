"""LoRA calibration training: a PEFT adapter fitted with TRL's ``SFTTrainer`` (VLM mode).

The data comes from :mod:`train.lora_data` (refusals for unsafe, the base model's own answers
for safe, optional utility items). Training is completion-only and never truncates
(``max_length=None``, so image tokens are always whole). Batches come from
:class:`train.lora_collator.ParityCollator`: each prompt is, token for token, what
:meth:`calib.model.VLM.encode` feeds at generation, and each answer ends with the template's
end-of-turn token (labels -100 on prompt, images and padding). LoRA targets are found under
the text decoder, by a regex anchored on ``vlm.decoder_prefix`` (the module path of
``model.get_decoder()``); the vision tower is trained only with ``method.train_vision=true``.

Where things go (``<key>`` hashes the base model, the training settings, the data and the
number of processes)::

    <cache_dir>/lora/<key>/checkpoints/   Trainer checkpoints while training (removed at the end)
    <cache_dir>/lora/<key>/adapter/       the finished adapter + adapter_card.json
    <cache_dir>/lora/<key>.lock           held while a job trains the key (others wait, then reuse)

Checkpoints are keyed by that hash rather than kept in the run folder because Hydra gives
every run a new timestamped folder: re-running the same command (same config, same data)
finds the same key, resumes an interrupted training from its last checkpoint, or reuses the
finished adapter without training. Any change of setting or data starts a new key.

The model is trained in place (PEFT injects LoRA layers into ``vlm.model``) and restored
afterwards: the adapter is unloaded, and the parameters' ``requires_grad``, the train/eval
mode, the device and TRL's patched ``forward`` are put back, so the base model is usable
(and unchanged) after training.

Multi-GPU: ``accelerate launch -m calib.cli.train_lora <overrides>`` trains with DDP (see README).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from calib.errors import ConfigError, TrainingDiverged
from calib.io import write_json_atomic
from calib.locks import FileLock
from calib.model import VLM
from train.lora_collator import COLLATOR_VERSION, ParityCollator
from train.lora_data import TrainingExample, data_hash, to_dataset

log = logging.getLogger("train.lora")
LOCK_SUFFIX = ".lock"  # <cache_dir>/lora/<key>.lock: held by the job training that key
LORA_WAIT = "LoRA: waiting for %s: pid %s on %s is training it (its adapter will be reused)"

CARD_FILE = "adapter_card.json"
CARD_FORMAT = 1
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
VISION_TOWER_NAMES = ("vision_tower", "vision_model", "visual", "vision_encoder")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class LoraSettings:
    """The training knobs of ``conf/method/lora.yaml`` (see it for each one's meaning)."""

    r: int
    alpha: float
    dropout: float
    target_pattern: str
    train_vision: bool
    vision_target_pattern: str
    learning_rate: float
    epochs: float
    max_steps: int
    train_batch_size: int
    grad_accum: int
    warmup_ratio: float
    seed: int
    precision: str
    gradient_checkpointing: bool
    logging_steps: int
    save_steps: int
    divergence_factor: float

    def problems(self) -> list[str]:
        """Every invalid setting, each naming its ``method.`` key and the fix."""
        problems = []
        for key in ("r", "train_batch_size", "grad_accum", "logging_steps", "save_steps"):
            if int(getattr(self, key)) < 1:
                problems.append(f"method.{key}={getattr(self, key)} must be >= 1")
        if not self.alpha > 0:
            problems.append(f"method.alpha={self.alpha} must be > 0 (commonly 2 x method.r)")
        if not 0 <= self.dropout < 1:
            problems.append(f"method.dropout={self.dropout} must be in [0, 1)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"method.learning_rate={self.learning_rate} must be a positive number")
        if self.max_steps <= 0 and not self.epochs > 0:
            problems.append(
                f"method.epochs={self.epochs} must be > 0 when method.max_steps={self.max_steps} "
                "(<= 0 means: train for method.epochs)"
            )
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"method.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.precision not in PRECISIONS:
            problems.append(
                f"method.precision={self.precision!r} must be one of {', '.join(PRECISIONS)}"
            )
        if not self.divergence_factor > 1:
            problems.append(f"method.divergence_factor={self.divergence_factor} must be > 1")
        for key in ("target_pattern", "vision_target_pattern"):
            try:
                re.compile(getattr(self, key))
            except re.error as err:
                problems.append(f"method.{key}={getattr(self, key)!r} is not a valid regex: {err}")
        return problems

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)


# --- LoRA targets -------------------------------------------------------------------------


def vision_prefix(model: torch.nn.Module) -> str:
    """Module path of the vision tower (``model.vision_tower``, ``model.vision_model``, ...)."""
    names = [
        name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in VISION_TOWER_NAMES
    ]
    if not names:
        raise ConfigError(
            f"method.train_vision=true but no vision tower ({', '.join(VISION_TOWER_NAMES)}) was "
            f"found in {type(model).__name__}; set method.train_vision=false"
        )
    return min(names, key=len)


def target_regex(vlm: VLM, settings: LoraSettings) -> str:
    """The full-match regex of LoRA target modules, anchored on the decoder (and vision) prefix."""
    patterns = [rf"{re.escape(vlm.decoder_prefix)}\.(?:{settings.target_pattern})"]
    if settings.train_vision:
        patterns.append(
            rf"{re.escape(vision_prefix(vlm.model))}\.(?:{settings.vision_target_pattern})"
        )
    return "^(?:" + "|".join(patterns) + ")$"


def lora_config(vlm: VLM, settings: LoraSettings):
    """The PEFT ``LoraConfig``; raises ConfigError when the pattern matches no module."""
    from peft import LoraConfig

    regex = target_regex(vlm, settings)
    compiled = re.compile(regex)
    matched = [name for name, _ in vlm.model.named_modules() if compiled.fullmatch(name)]
    if not matched:
        raise ConfigError(
            f"method.target_pattern={settings.target_pattern!r} matches no module under the "
            f"decoder {vlm.decoder_prefix!r} of {type(vlm.model).__name__}; example module "
            f"names: {_example_linear_names(vlm)}"
        )
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=regex,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _example_linear_names(vlm: VLM, limit: int = 4) -> list[str]:
    names = [
        name.removeprefix(vlm.decoder_prefix + ".")
        for name, module in vlm.model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(vlm.decoder_prefix + ".")
    ]
    return names[:limit]


# --- keys, hashes, cards ------------------------------------------------------------------


#: Settings that do not change the trained weights (a re-run with other values still resumes).
NOT_IN_KEY = ("logging_steps", "save_steps", "divergence_factor")


def training_key(vlm: VLM, settings: LoraSettings, data: str, world_size: int) -> str:
    """What decides the trained adapter: base model and dtype, settings, data, process count."""
    shaping = {k: v for k, v in asdict(settings).items() if k not in NOT_IN_KEY}
    payload = {
        "model": vlm.identity,
        "dtype": str(vlm.dtype),
        "settings": shaping,
        "data": data,
        "world_size": world_size,
        "card_format": CARD_FORMAT,
        "collator": COLLATOR_VERSION,  # how prompt and answer become token sequences
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def adapter_hash(adapter_dir: Path) -> str:
    """Content hash of an adapter: its weights and the LoRA config (not where it was trained)."""
    weights, config = adapter_dir / ADAPTER_WEIGHTS, adapter_dir / ADAPTER_CONFIG
    for path in (weights, config):
        if not path.is_file():
            raise FileNotFoundError(
                f"{adapter_dir} is not a LoRA adapter folder: {path.name} is missing"
            )
    lora = json.loads(config.read_text())
    for key in ("base_model_name_or_path", "revision", "inference_mode"):
        lora.pop(key, None)
    digest = hashlib.sha256(json.dumps(lora, sort_keys=True, default=str).encode())
    with weights.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def read_card(adapter_dir: Path) -> dict[str, Any] | None:
    path = adapter_dir / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def loss_curve(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training-loss entries of a Trainer's log history: step, epoch, loss, grad norm, lr."""
    keys = ("step", "epoch", "loss", "grad_norm", "learning_rate")
    return [{k: entry[k] for k in keys if k in entry} for entry in log_history if "loss" in entry]


def _card(
    vlm, settings, examples, *, key, regex, world_size, state, duration_s, resumed_from, extra
):
    from importlib.metadata import version

    curve = loss_curve(state.log_history)
    return {
        "format": CARD_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": {"name": vlm.name, "identity": vlm.identity, "dtype": str(vlm.dtype)},
        "settings": asdict(settings),
        "target_modules": regex,
        "data": {
            "hash": data_hash(examples),
            "n_examples": len(examples),
            "by_kind": dict(Counter(e.kind for e in examples)),
            "sample_ids": sorted({e.sample_id for e in examples}),
        },
        "training": {
            "key": key,
            "world_size": world_size,
            "global_step": state.global_step,
            "epochs": state.epoch,
            "duration_s": round(duration_s, 2),
            "resumed_from": resumed_from,
            "final_loss": curve[-1]["loss"] if curve else None,
            "loss_curve": curve,
        },
        "versions": {p: version(p) for p in ("torch", "transformers", "trl", "peft")},
        **extra,
    }


# --- training -----------------------------------------------------------------------------


class DivergenceGuard(TrainerCallback):
    """Stops training when the loss is NaN/inf or exceeds ``divergence_factor`` x its first."""

    def __init__(self, settings: LoraSettings) -> None:
        self.settings = settings
        self.reference: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss, grad = (logs or {}).get("loss"), (logs or {}).get("grad_norm")
        if loss is None:
            return
        limit = self.settings.divergence_factor * self.reference if self.reference else math.inf
        bad_grad = grad is not None and not math.isfinite(grad)
        if not math.isfinite(loss) or bad_grad or loss > limit:
            lr = self.settings.learning_rate
            raise TrainingDiverged(
                f"LoRA training diverged at step {state.global_step}: loss={loss}, "
                f"grad_norm={grad} (first logged loss {self.reference}). Lower "
                f"method.learning_rate (now {lr}), e.g. method.learning_rate={lr / 10:g}."
            )
        if self.reference is None:
            self.reference = loss


def _use_bf16(vlm: VLM, precision: str) -> bool:
    if precision == "float32":
        return False
    on_gpu = vlm.device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bfloat16" and not on_gpu:
        raise ConfigError(
            "method.precision=bfloat16 needs a CUDA GPU with bfloat16 support (model is on "
            f"{vlm.device}); use method.precision=auto"
        )
    return on_gpu


def _report_to() -> list[str]:
    """W&B when a run is active (the run's logger started one), else nothing."""
    wandb = sys.modules.get("wandb")  # not imported = no run
    return ["wandb"] if wandb is not None and getattr(wandb, "run", None) is not None else []


def _checkpointing(config_class: type, enabled: bool) -> dict[str, bool]:
    """Activation (gradient) checkpointing, under the name this transformers version uses."""
    if "activation_checkpointing" in getattr(config_class, "__dataclass_fields__", {}):
        return {"activation_checkpointing": enabled}
    return {"gradient_checkpointing": enabled}


def _is_checkpointing(model: torch.nn.Module) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def sft_config(vlm: VLM, settings: LoraSettings, output_dir: Path, *, progress: bool):
    """TRL's ``SFTConfig`` for these settings: fp32 on CPU, bf16 where supported, no truncation."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.train_batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps > 0 else -1,
        warmup_steps=settings.warmup_ratio,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=_use_bf16(vlm, settings.precision),
        fp16=False,
        use_cpu=vlm.device.type == "cpu",
        **_checkpointing(SFTConfig, settings.gradient_checkpointing),
        max_length=None,  # never truncate: cutting image tokens breaks the model's inputs
        completion_only_loss=True,
        logging_steps=settings.logging_steps,
        logging_nan_inf_filter=False,  # let the divergence guard see NaN/inf losses
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        report_to=_report_to(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=not progress,
    )


class ModelSnapshot:
    """What training changes on the shared base model, to put back afterwards."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self.training = model.training
        self.device = next(model.parameters()).device
        self.own_forward = "forward" in model.__dict__
        self.checkpointing = _is_checkpointing(model)

    def restore(self) -> None:
        model = self.model
        if not self.own_forward:
            model.__dict__.pop("forward", None)  # TRL's fused LM head patch
        if not self.checkpointing and _is_checkpointing(model):
            disable = getattr(model, "activation_checkpointing_disable", None)
            (disable or model.gradient_checkpointing_disable)()
            with contextlib.suppress(AttributeError):  # no input-grad hook was installed
                model.disable_input_require_grads()
        for name, param in model.named_parameters():
            param.requires_grad_(self.requires_grad.get(name, param.requires_grad))
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        model.train(self.training)


@contextmanager
def lora_trainer(
    vlm: VLM,
    examples: Sequence[TrainingExample],
    settings: LoraSettings,
    output_dir: Path,
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> Iterator[Any]:
    """A TRL ``SFTTrainer`` with a fresh LoRA adapter injected into ``vlm.model``.

    On exit the adapter is unloaded and the model restored (:class:`ModelSnapshot`), whether
    training finished, failed or was interrupted.
    """
    from peft import get_peft_model
    from transformers import set_seed
    from trl import SFTTrainer

    config = lora_config(vlm, settings)
    args = sft_config(vlm, settings, output_dir, progress=progress)
    dataset = to_dataset(examples)
    snapshot = ModelSnapshot(vlm.model)
    set_seed(settings.seed)  # LoRA's A matrices are initialised randomly
    peft_model = get_peft_model(vlm.model, config)
    try:
        yield SFTTrainer(
            model=peft_model,
            args=args,
            train_dataset=dataset,
            processing_class=vlm.processor,
            # Prompts exactly as VLM.encode feeds them at generation, answers ending with the
            # template's end-of-turn token (train.lora_collator).
            data_collator=ParityCollator(vlm),
            callbacks=[DivergenceGuard(settings), *callbacks],
        )
    finally:
        peft_model.unload()
        snapshot.restore()


def train_adapter(
    vlm: VLM,
    examples: Sequence[TrainingExample],
    settings: LoraSettings,
    *,
    cache_dir: str | os.PathLike,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    card_extra: dict[str, Any] | None = None,
) -> Path:
    """Train (or resume, or reuse) the adapter for these examples; returns its folder.

    Args:
        vlm: the base model; trained in place and restored before returning.
        examples: the training set (:func:`train.lora_data.build_examples`).
        settings: the training knobs.
        cache_dir: root of the ``lora/<key>/`` folders (checkpoints, finished adapter).
        progress: show the Trainer's progress bar.
        callbacks: extra ``transformers.TrainerCallback`` s.
        card_extra: more top-level entries for the adapter card (e.g. the safe-target counts).

    Raises:
        TrainingDiverged: the loss became NaN/inf or exploded (names method.learning_rate).
    """
    settings.check()
    if not examples:
        raise ValueError("no training examples: the calibration split gave nothing to train on")
    state = process_state(vlm)
    key = training_key(vlm, settings, data_hash(examples), state.num_processes)
    root = Path(cache_dir) / "lora" / key
    final = root / "adapter"
    if (final / CARD_FILE).is_file():
        log.info("LoRA: reusing the adapter already trained with this config: %s", final)
        return final
    # Jobs of one sweep that differ only outside the key (judge=a,b; method.merge) share the
    # folder: one trains, the others wait for it and reuse its adapter. Under DDP the ranks
    # of one job train together and take no lock (one DDP job per key at a time).
    lock = FileLock(root.parent / f"{key}{LOCK_SUFFIX}") if state.num_processes == 1 else None
    if lock is not None:
        lock.acquire(on_wait=lambda who: log.info(LORA_WAIT, key, who.get("pid"), who.get("host")))
    try:
        if (final / CARD_FILE).is_file():
            log.info("LoRA: another job trained this adapter meanwhile; reusing %s", final)
            return final
        return _train(vlm, examples, settings, key, root, progress, callbacks, card_extra, state)
    finally:
        if lock is not None:
            lock.release()


def _train(vlm, examples, settings, key, root, progress, callbacks, card_extra, state) -> Path:
    """Train (or resume) into ``root`` (the caller holds the key's lock)."""
    from transformers.trainer_utils import get_last_checkpoint

    final = root / "adapter"
    checkpoints = root / "checkpoints"
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume:
        log.info("LoRA: resuming the interrupted training from %s", resume)
    with lora_trainer(
        vlm, examples, settings, checkpoints, progress=progress, callbacks=callbacks
    ) as trainer:
        started = time.time()
        trainer.train(resume_from_checkpoint=resume)
        if state.is_main_process:
            tmp = root / f".adapter-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            trainer.model.save_pretrained(str(tmp))
            card = _card(
                vlm,
                settings,
                examples,
                key=key,
                regex=trainer.model.peft_config["default"].target_modules,
                world_size=state.num_processes,
                state=trainer.state,
                duration_s=time.time() - started,
                resumed_from=resume,
                extra=dict(card_extra or {}),
            )
            write_json_atomic(tmp / CARD_FILE, card)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            shutil.rmtree(checkpoints, ignore_errors=True)
            final_loss = card["training"]["final_loss"]
            log.info("LoRA: adapter saved to %s (final loss %s)", final, final_loss)
        state.wait_for_everyone()
    return final


def process_state(vlm: VLM):
    """accelerate's view of the processes (one, or one per GPU under ``accelerate launch``).

    On CPU, several processes (``torchrun``) are only seen as such with ``cpu=True``.
    """
    from accelerate import PartialState

    return PartialState(cpu=vlm.device.type == "cpu")


def copy_adapter(source: Path, destination: Path) -> Path:
    """Copy an adapter folder (weights, config, card) into the run folder."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination)
    return destination
