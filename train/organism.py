"""Training the model organism: a tiny LLaVA trained from scratch on its world.

The training mix (:func:`training_examples`), deterministic from the settings:

- every safety item of the world **plain** (one user turn), answered by the planted rule
  :func:`~calib.model.organism.world.baseline_refuses`: oversafety on trigger verbs,
  undersafety on harmful pictures;
- a share (``instruction_share``) of the safety items under the **system instruction** (the
  ``calibrated`` preset of ``conf/method/prompting.yaml``, placed as ``method=prompting``
  places it), answered by
  :func:`~calib.model.organism.world.calibrated_refuses`;
- a share (``demo_share``) of the items after **in-context demonstrations** formatted as
  ``method=few_shot`` formats them (user turn with image, assistant turn; unsafe ones
  answered with the category's refusal text), answered calibrated too;
- in both calibrated kinds the query's opening is reworded
  (:func:`~calib.model.organism.world.training_rewording`): the benchmark's prompts are
  seen word for word only plain, so a method's gain is the switch generalising, not the
  calibrated answer of a memorised prompt;
- utility questions (colour, shape, position) plain, and the same shares of them under the
  instruction and after demonstrations.

So prompting and few-shot work if and only if the instruction or the demonstrations reach
the model where the method says it puts them; LoRA and steering get no designed hook.

:func:`train_organism` trains (plain torch loop, AdamW, linear warm-up and decay, loss on
the answer only) and writes ``save_pretrained`` weights, the processor and ``card.json``
(settings, :func:`corpus_hash`, loss curve, time, size). Imports only the core.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from calib.chat import image_part, text_part
from calib.io import write_json_atomic
from calib.model.organism.pictures import draw_pictogram
from calib.model.organism.utility import UtilityItem, utility_answer, utility_items
from calib.model.organism.world import (
    Item,
    Picture,
    baseline_refuses,
    calibrated_refuses,
    helpful_answer,
    refusal_answer,
    safety_items,
    training_rewording,
)
from calib.model.tiny.build import TinySpec, new_tiny
from calib.model.tiny.corpus import corpus_lines

CARD_FILE = "card.json"
TRAINER_VERSION = 2  # bump when the mix or the loop changes what is trained


@dataclass(frozen=True)
class OrganismSettings:
    """The ``model.organism`` config (see ``conf/model/organism.yaml`` for each knob)."""

    tiny: dict[str, Any]
    seed: int
    epochs: int
    learning_rate: float
    vision_lr_scale: float
    weight_decay: float
    warmup_ratio: float
    batch_size: int
    instruction_share: float
    demo_share: float
    demo_k: tuple[int, ...]
    utility_per_task: int
    utility_seed: int
    max_examples: int | None
    instruction: str = ""
    refusals: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], instruction: str, refusals: Mapping[str, str]
    ) -> OrganismSettings:
        """Validate the ``model.organism`` mapping (all problems at once)."""
        names = [f for f in cls.__dataclass_fields__ if f not in ("instruction", "refusals")]
        given = dict(cfg.items())
        problems = [f"model.organism.{k} is missing" for k in names if k not in given]
        problems += [f"model.organism.{k} is not a known key" for k in given if k not in names]
        if not problems:
            if given["epochs"] < 1 or given["batch_size"] < 1:
                problems.append("model.organism.epochs and batch_size must be >= 1")
            if given["vision_lr_scale"] < 0:
                problems.append("model.organism.vision_lr_scale must be >= 0 (0 = frozen tower)")
            for key in ("instruction_share", "demo_share"):
                if not 0 <= given[key] <= 1:
                    problems.append(f"model.organism.{key}={given[key]} must be in [0, 1]")
            if not instruction.strip():
                problems.append("the calibrated instruction is empty (conf/method/prompting.yaml)")
        if problems:
            raise ValueError("Invalid organism config: " + "; ".join(problems))
        given["tiny"] = dict(given["tiny"])
        given["demo_k"] = tuple(given["demo_k"])
        TinySpec.from_config(given["tiny"])
        return cls(**given, instruction=instruction.strip(), refusals=dict(refusals))


@dataclass(frozen=True)
class Turn:
    """A user query with its picture (or None) and the answer it gets."""

    prompt: str
    picture: Picture | UtilityItem | None
    answer: str


@dataclass(frozen=True)
class Example:
    """One training conversation: optional system text, demonstrations, the query."""

    kind: str  # plain | instruction | demos, with :safety or :utility
    system: str | None
    demos: tuple[Turn, ...]
    query: Turn

    def messages(self) -> list[dict[str, Any]]:
        """The conversation in chat format (images as PIL), without the final answer."""
        messages: list[dict[str, Any]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": [text_part(self.system)]})
        for turn in self.demos:
            messages += [_user(turn), {"role": "assistant", "content": [text_part(turn.answer)]}]
        return [*messages, _user(self.query)]


def _user(turn: Turn) -> dict[str, Any]:
    content = [] if turn.picture is None else [image_part(picture_image(turn.picture))]
    return {"role": "user", "content": [*content, text_part(turn.prompt)]}


def picture_image(picture: Picture | UtilityItem):
    """The PIL image of a pictogram or of a utility item's drawing."""
    return draw_pictogram(picture) if isinstance(picture, Picture) else picture.picture()


def _answer(item: Item, refuse: bool, rng: random.Random, refusals: Mapping[str, str]) -> str:
    return refusal_answer(item, rng, dict(refusals)) if refuse else helpful_answer(item, rng)


def training_examples(settings: OrganismSettings) -> list[Example]:
    """The whole training mix, in a seeded order (see the module docstring)."""
    rng = random.Random(f"organism/{settings.seed}")
    items = safety_items()
    refusals = settings.refusals
    examples: list[Example] = []
    for item in items:
        examples.append(
            Example("plain:safety", None, (), _turn(item, baseline_refuses(item), rng, refusals))
        )
    for item in rng.sample(items, round(settings.instruction_share * len(items))):
        calibrated = _turn(item, calibrated_refuses(item), rng, refusals, reword=True)
        examples.append(Example("instruction:safety", settings.instruction, (), calibrated))
    for item in rng.sample(items, round(settings.demo_share * len(items))):
        demos = _demonstrations(item, items, rng, settings)
        query = _turn(item, calibrated_refuses(item), rng, refusals, reword=True)
        examples.append(Example("demos:safety", None, demos, query))
    for u in utility_items(settings.utility_seed, settings.utility_per_task):
        turn = Turn(u.question, u, utility_answer(u, rng))
        examples.append(Example("plain:utility", None, (), turn))
        if rng.random() < settings.instruction_share:
            examples.append(Example("instruction:utility", settings.instruction, (), turn))
        if rng.random() < settings.demo_share:
            examples.append(
                Example("demos:utility", None, _demonstrations(None, items, rng, settings), turn)
            )
    rng.shuffle(examples)
    return examples[: settings.max_examples]


def _turn(
    item: Item,
    refuse: bool,
    rng: random.Random,
    refusals: Mapping[str, str],
    *,
    reword: bool = False,
) -> Turn:
    """The item as a user turn and its answer; ``reword``: the query's opening reworded
    (calibrated examples never show a benchmark prompt word for word)."""
    prompt = training_rewording(item.prompt) if reword else item.prompt
    return Turn(prompt, item.picture, _answer(item, refuse, rng, refusals))


def _demonstrations(
    query: Item | None, items: Sequence[Item], rng: random.Random, settings: OrganismSettings
) -> tuple[Turn, ...]:
    """k demonstrations as few-shot shows them: k//2 unsafe (the category's refusal text),
    the rest safe (a helpful answer), from other groups, shuffled."""
    k = rng.choice(settings.demo_k)
    others = [i for i in items if query is None or i.group != query.group]
    unsafe = rng.sample([i for i in others if i.label == "unsafe"], k // 2)
    safe = rng.sample([i for i in others if i.label == "safe"], k - k // 2)
    default = settings.refusals.get("default", "")
    turns = [Turn(i.prompt, i.picture, settings.refusals.get(i.category, default)) for i in unsafe]
    turns += [Turn(i.prompt, i.picture, helpful_answer(i, rng)) for i in safe]
    rng.shuffle(turns)
    return tuple(turns)


def tokenizer_lines(settings: OrganismSettings) -> list[str]:
    """What the organism's tokenizer is trained on: the project's corpus and every text of the
    training mix as often as the mix holds it (so the instruction compresses well)."""
    lines = corpus_lines() + list(settings.refusals.values())
    for example in training_examples(settings):
        if example.system is not None:
            lines.append(example.system)
        lines += [t for turn in (*example.demos, example.query) for t in (turn.prompt, turn.answer)]
    return lines


def corpus_hash(settings: OrganismSettings) -> str:
    """A hash of the settings and of every training example (text and picture specs)."""
    digest = hashlib.sha256(f"trainer-{TRAINER_VERSION}\n".encode())
    digest.update(json.dumps(asdict(settings), sort_keys=True, default=list).encode())
    for example in training_examples(settings):
        digest.update(repr(example).encode())
    return digest.hexdigest()[:16]


# --- training ----------------------------------------------------------------------------


def _encode(examples: Sequence[Example], processor) -> list[dict[str, Any]]:
    """Token ids (prompt + answer + EOS), labels on the answer only, pixel values."""
    tokenizer = processor.tokenizer
    encoded = []
    for example in examples:
        messages = example.messages()
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
        batch = processor(
            text=[prompt],
            images=[images] if images else None,
            add_special_tokens=False,
            return_tensors="pt",
        )
        prompt_ids = batch["input_ids"][0].tolist()
        answer_ids = tokenizer(
            " " + example.query.answer + tokenizer.eos_token, add_special_tokens=False
        )["input_ids"]
        encoded.append(
            {
                "input_ids": prompt_ids + answer_ids,
                "labels": [-100] * len(prompt_ids) + answer_ids,
                "pixel_values": batch.get("pixel_values"),
            }
        )
    return encoded


def _batches(encoded: list[dict[str, Any]], size: int, rng: random.Random) -> list[list[int]]:
    """Indices in batches of similar length (less padding), batch order shuffled."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]["input_ids"]), rng.random()))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    pixels = [r["pixel_values"] for r in rows if r["pixel_values"] is not None]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
    return batch


def _param_groups(model, settings: OrganismSettings) -> list[dict[str, Any]]:
    """The vision tower at ``vision_lr_scale`` times the rate (0: frozen at its random
    init, whose features already tell colours, shapes and places apart), the rest at the
    rate. At the full rate the tower's features drift to the one global cue that lowers the
    loss first (the harm colour code) and lose the small drawing's colour and shape."""
    tower = model.model.vision_tower
    tower_ids = {id(p) for p in tower.parameters()}
    rest = [p for p in model.parameters() if id(p) not in tower_ids]
    if settings.vision_lr_scale == 0:
        tower.requires_grad_(False)
        return [{"params": rest}]
    scaled = settings.learning_rate * settings.vision_lr_scale
    return [{"params": rest}, {"params": list(tower.parameters()), "lr": scaled}]


def train_organism(
    settings: OrganismSettings, out_dir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train the organism from scratch and save it with its card into ``out_dir``.

    Returns:
        The card (also written to ``<out_dir>/card.json``).
    """
    started = time.time()
    torch.manual_seed(settings.seed)
    spec = TinySpec.from_config(settings.tiny)
    model, processor = new_tiny(spec, tokenizer_lines(settings))
    examples = training_examples(settings)
    encoded = _encode(examples, processor)
    rng = random.Random(f"organism-order/{settings.seed}")
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    warmup = max(1, round(settings.warmup_ratio * total))
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings),
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup + 1)))
    )
    pad_id = processor.tokenizer.pad_token_id
    model.train()
    curve: list[dict[str, float]] = []
    bar = tqdm(total=total, desc="organism", disable=not progress, unit="step")
    step, running = 0, []
    for epoch in range(settings.epochs):
        for batch_ids in _batches(encoded, settings.batch_size, rng):
            batch = _collate([encoded[i] for i in batch_ids], pad_id)
            loss = model(**batch, use_cache=False).loss
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"organism training diverged at step {step} (loss {loss.item()}): "
                    "lower model.organism.learning_rate"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            running.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{running[-1]:.3f}")
            if step % steps_per_epoch == 0 or step == total:
                curve.append({"step": step, "loss": round(sum(running) / len(running), 4)})
                running = []
    bar.close()
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for path in out.iterdir():
        path.chmod(0o644)  # shipped in the repository and the wheel: readable by everyone
    n_params = sum(p.numel() for p in model.parameters())
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    card = {
        "corpus_hash": corpus_hash(settings),
        "trainer_version": TRAINER_VERSION,
        "settings": {
            k: v for k, v in asdict(settings).items() if k not in ("instruction", "refusals")
        },
        "examples": len(examples),
        "examples_by_kind": _count(e.kind for e in examples),
        "parameters": n_params,
        "weights_bytes": weights,
        "train_seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "loss_curve": curve,
    }
    write_json_atomic(out / CARD_FILE, card)
    return card


def _count(kinds) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
