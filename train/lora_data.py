"""The supervised examples LoRA trains on, in the form TRL's ``SFTTrainer`` takes them.

A :class:`TrainingExample` is a prompt (a conversation, images inside) and the completion
the model should give; :mod:`calib.methods.lora_examples` decides which examples a
calibration split gives. :func:`to_dataset` turns the examples into the prompt-completion,
conversational format with an ``images`` column that TRL's ``SFTTrainer`` trains on in
vision-language mode (loss on the completion only). :func:`data_hash` names the data in
cache keys and adapter cards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calib.chat import conversation_images
from calib.hashing import image_digest, records_digest
from calib.types import Conversation


@dataclass(frozen=True)
class TrainingExample:
    """One supervised example.

    Attributes:
        sample_id: the sample it was made from.
        kind: ``refusal`` (unsafe sample), ``self`` (safe sample, base model's own answer)
            or ``utility`` (utility item, its reference answer).
        conversation: the prompt, images inside the message parts (as :mod:`calib.chat`).
        completion: the assistant answer the model is trained to give.
    """

    sample_id: str
    kind: str
    conversation: Conversation
    completion: str


def _prompt_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation with image payloads as placeholders (filled from the ``images`` column)."""
    messages = []
    for message in conversation:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image"} if part.get("type") == "image" else dict(part) for part in content
            ]
        messages.append({"role": message["role"], "content": content})
    return messages


def to_dataset(examples: Sequence[TrainingExample]):
    """A ``datasets.Dataset`` of ``prompt`` / ``completion`` / ``images`` rows for ``SFTTrainer``.

    Images stay file paths until a batch is collated (decoded then, as RGB), so a large
    calibration split does not sit decoded in memory.
    """
    from datasets import Dataset, Image, List

    rows = [
        {
            "prompt": _prompt_messages(example.conversation),
            "completion": [
                {"role": "assistant", "content": [{"type": "text", "text": example.completion}]}
            ],
            "images": [_image_value(x) for x in conversation_images(example.conversation)],
        }
        for example in examples
    ]
    return Dataset.from_list(rows).cast_column("images", List(Image(mode="RGB")))


def _image_value(image: object) -> object:
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"training image not found: {path}")
        return str(path)
    return image  # a PIL image: datasets encodes it


def data_hash(examples: Sequence[TrainingExample]) -> str:
    """Content hash of the training data: prompts, image contents, completions."""
    return records_digest(
        {
            "id": example.sample_id,
            "kind": example.kind,
            "prompt": _prompt_messages(example.conversation),
            "images": [image_digest(x) for x in conversation_images(example.conversation)],
            "completion": example.completion,
        }
        for example in examples
    )
