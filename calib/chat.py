"""Building conversations from samples."""

from __future__ import annotations

from calib.types import Conversation, Message, Sample


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_part(image: object) -> dict:
    return {"type": "image", "image": image}


def user_turn(sample: Sample) -> Message:
    """The user message for a sample: its image (if any) first, then its query."""
    content = [image_part(sample.image)] if sample.image is not None else []
    content.append(text_part(sample.prompt))
    return {"role": "user", "content": content}


def default_conversation(sample: Sample) -> Conversation:
    """A single user turn, as the benchmark authors query models."""
    return [user_turn(sample)]


def conversation_images(conversation: Conversation) -> list[object]:
    """The image payloads of a conversation, in order of appearance."""
    return [
        part["image"]
        for message in conversation
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]
