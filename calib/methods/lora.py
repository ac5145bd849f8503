"""Calibration by LoRA fine-tuning: an adapter trained on the calibration split (TRL + PEFT).

``fit`` builds the training set (refusals for unsafe samples, the base model's own answers
for safe ones, optional utility items; :mod:`train.lora_data`) and trains the adapter
(:func:`train.lora.train_adapter`: resumes an interrupted training, reuses a finished one
with the same config), then copies it with its card into ``<run>/method/adapter``. With
``method.adapter=<folder>`` it trains nothing and uses that adapter.

``active`` puts the adapter on the model for the duration of generation and takes it off in
``finally`` (PEFT ``unload``), so the base model is the same before and after; with
``method.merge=true`` the adapter is merged into the weights for speed and the original
weights are copied back afterwards (a CPU copy of the adapted weights is kept meanwhile).
The fingerprint holds the adapter's content hash, so the generation cache never mixes up
two adapters.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from calib.chat import default_conversation
from calib.errors import ConfigError
from calib.hashing import image_digest
from calib.io import write_json_atomic, write_jsonl_atomic
from calib.methods.lora_examples import build_examples
from calib.methods.refusals import refusal_templates
from calib.methods.targets import check_policy
from calib.model import VLM
from calib.types import Conversation, Judge, Sample
from train.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraSettings,
    ModelSnapshot,
    adapter_hash,
    copy_adapter,
    process_state,
    read_card,
    train_adapter,
)

log = logging.getLogger("calib.methods.lora")

ADAPTER_DIR = "adapter"  # inside the run's method folder
EXAMPLES_FILE = "training_examples.jsonl"
SOURCE_FILE = "adapter_source.json"  # written instead of a copy when method.adapter is given


class LoraMethod:
    """A LoRA adapter trained to refuse the unsafe and keep answering the safe look-alikes.

    Every argument is a knob of ``conf/method/lora.yaml`` (see there for its meaning).
    """

    def __init__(
        self,
        *,
        adapter: str | None,
        merge: bool,
        r: int,
        alpha: float,
        dropout: float,
        target_pattern: str,
        train_vision: bool,
        vision_target_pattern: str,
        learning_rate: float,
        epochs: float,
        max_steps: int,
        train_batch_size: int,
        grad_accum: int,
        warmup_ratio: float,
        seed: int,
        precision: str,
        gradient_checkpointing: bool,
        logging_steps: int,
        save_steps: int,
        divergence_factor: float,
        refusals: Mapping[str, str] | None,
        utility_mix: float,
        utility_source: Any,
        utility_exclude: Any,
        generate_batch_size: int,
        decoding: Mapping[str, Any],
        cache_dir: str,
        progress: bool,
        judge: Judge,
        safe_target: str,
        safe_template: str | None,
        allow_overlap: bool,
    ) -> None:
        self.settings = LoraSettings(
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_pattern=target_pattern,
            train_vision=train_vision,
            vision_target_pattern=vision_target_pattern,
            learning_rate=learning_rate,
            epochs=epochs,
            max_steps=max_steps,
            train_batch_size=train_batch_size,
            grad_accum=grad_accum,
            warmup_ratio=warmup_ratio,
            seed=seed,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            logging_steps=logging_steps,
            save_steps=save_steps,
            divergence_factor=divergence_factor,
        )
        problems = self.settings.problems() + check_policy(safe_target, safe_template)
        if utility_mix < 0:
            problems.append(f"method.utility_mix={utility_mix} must be >= 0")
        if utility_mix > 0 and not callable(getattr(utility_source, "items", None)):
            problems.append(
                f"method.utility_mix={utility_mix} needs method.utility_source: a utility set "
                "(an object with items()), e.g. eval.utility.sample.SampleUtility"
            )
        if generate_batch_size < 1:
            problems.append(f"method.generate_batch_size={generate_batch_size} must be >= 1")
        try:
            refusal_templates(refusals)
        except ValueError as err:
            problems.append(f"method.refusals: {err}")
        if problems:
            raise ConfigError(problems)
        self.adapter = adapter
        self.merge = merge
        self.judge = judge
        self.safe_target = safe_target
        self.safe_template = safe_template
        self.allow_overlap = allow_overlap
        self._safe_counts: dict[str, Any] | None = None
        self.refusals = dict(refusals or {})
        self.utility_mix = utility_mix
        self.utility_source = utility_source
        self.utility_exclude = utility_exclude
        self.generate_batch_size = generate_batch_size
        self.decoding = dict(decoding)
        self.cache_dir = cache_dir
        self.progress = progress
        self.adapter_dir: Path | None = None
        self._adapter_hash: str | None = None

    # --- fit -----------------------------------------------------------------------------

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Train (or resume, or reuse) the adapter; ``method.adapter`` skips training."""
        workdir.mkdir(parents=True, exist_ok=True)
        state = process_state(vlm)
        if self.adapter is not None:
            self.use_adapter(given_adapter(self.adapter), vlm)
            if state.is_main_process:
                write_json_atomic(
                    workdir / SOURCE_FILE,
                    {"adapter": str(self.adapter_dir), "hash": self._adapter_hash},
                )
            return
        utility_items = (
            without_evaluated(self.utility_source.items(), self.utility_exclude.items())
            if self.utility_mix > 0
            else []
        )
        # One process generates the base answers; the others then read them from the cache.
        with state.main_process_first():
            examples, self._safe_counts = build_examples(
                vlm,
                samples,
                refusals=self.refusals,
                judge=self.judge,
                safe_target=self.safe_target,
                safe_template=self.safe_template,
                decoding=self.decoding,
                batch_size=self.generate_batch_size,
                cache_dir=self.cache_dir,
                utility_items=utility_items,
                utility_mix=self.utility_mix,
                seed=self.settings.seed,
            )
        trained = train_adapter(
            vlm,
            examples,
            self.settings,
            cache_dir=self.cache_dir,
            progress=self.progress,
            card_extra={"safe_targets": self._safe_counts},
        )
        if state.is_main_process:
            write_jsonl_atomic(
                workdir / EXAMPLES_FILE,
                [{"id": e.sample_id, "kind": e.kind, "completion": e.completion} for e in examples],
            )
            trained = copy_adapter(trained, workdir / ADAPTER_DIR)
        state.wait_for_everyone()
        self.use_adapter(trained, vlm)

    def report(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``method``: the adapter and its training data."""
        card = read_card(self.adapter_dir) if self.adapter_dir is not None else None
        data = (card or {}).get("data", {})
        return {
            "adapter_hash": self._adapter_hash,
            "reused": self.adapter is not None,
            "examples_by_kind": data.get("by_kind"),
            "safe_targets": self._safe_counts or (card or {}).get("safe_targets"),
        }

    def trained_on(self) -> set[str]:
        """Ids of the samples the adapter was trained on (from its card; empty if it has none)."""
        card = read_card(self.adapter_dir) if self.adapter_dir is not None else None
        return set((card or {}).get("data", {}).get("sample_ids", []))

    def use_adapter(self, adapter_dir: Path, vlm: VLM | None = None) -> None:
        """Use this adapter folder from now on (``fit`` calls it; tests and notebooks may too)."""
        self._adapter_hash = adapter_hash(adapter_dir)
        self.adapter_dir = adapter_dir
        card = read_card(adapter_dir)
        if vlm is not None and card is not None and card["base_model"]["identity"] != vlm.identity:
            log.warning(
                "method.adapter=%s was trained on %s, but the model is %s",
                adapter_dir,
                card["base_model"]["identity"],
                vlm.identity,
            )

    # --- generation ----------------------------------------------------------------------

    def conversation(self, sample: Sample) -> Conversation:
        return default_conversation(sample)

    @contextmanager
    def active(self, vlm: VLM) -> Iterator[None]:
        """The adapter on the model for the duration of the block (merged if ``merge``)."""
        if self.adapter_dir is None:
            raise RuntimeError("LoraMethod.active() before fit(): fit or use_adapter first")
        with adapter_applied(vlm, self.adapter_dir, merge=self.merge):
            yield

    def fingerprint(self) -> str:
        if self._adapter_hash is None:
            raise RuntimeError("LoraMethod.fingerprint() before fit()")
        merged = ";merged" if self.merge else ""
        return "lora:" + hashlib.sha256(f"{self._adapter_hash}{merged}".encode()).hexdigest()[:16]


def given_adapter(path: str | Path) -> Path:
    """``method.adapter`` as a folder that holds an adapter, or a ConfigError naming the fix."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"method.adapter={str(path)!r} is not a folder: point it at the adapter folder of a "
            "LoRA run (outputs/<run>/method/adapter), or set method.adapter=null to train"
        )
    missing = [name for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"method.adapter={str(path)!r} is not a LoRA adapter folder ({', '.join(missing)} "
            "missing): point it at outputs/<run>/method/adapter"
        )
    return folder


@contextmanager
def adapter_applied(vlm: VLM, adapter_dir: Path, *, merge: bool = False) -> Iterator[None]:
    """Load a PEFT adapter into ``vlm.model`` in place; unload (and restore weights) on exit."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    snapshot = ModelSnapshot(vlm.model)
    try:
        peft_model = PeftModel.from_pretrained(vlm.model, str(adapter_dir), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as err:
        snapshot.restore()
        raise ConfigError(
            f"method.adapter={adapter_dir} does not fit {vlm.name} ({type(vlm.model).__name__}): "
            f"{err}. Use an adapter trained on this model."
        ) from err
    originals: dict[str, torch.Tensor] = {}
    try:
        if merge:
            for name, module in vlm.model.named_modules():
                if isinstance(module, LoraLayer):
                    weight = module.get_base_layer().weight
                    originals[name] = weight.detach().to("cpu", copy=True)
            peft_model.merge_adapter()
        yield
    finally:
        peft_model.unload()
        with torch.no_grad():
            for name, weight in originals.items():
                vlm.model.get_submodule(name).weight.copy_(weight)
        snapshot.restore()


def without_evaluated(items: Sequence[Sample], evaluated: Sequence[Sample]) -> list[Sample]:
    """Training utility items minus exact copies of evaluated ones.

    A copy has the same question, the same answer and the same image bytes: two utility
    sets drawn with different seeds can still share items (a printed word renders the
    same whatever the seed), and training on them would inflate the utility figure.
    """

    def key(item: Sample) -> tuple:
        return item.prompt, item.reference, image_digest(item.image) if item.image else None

    seen = {key(item) for item in evaluated}
    return [item for item in items if key(item) not in seen]
