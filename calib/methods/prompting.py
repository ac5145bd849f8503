"""Calibration by prompting: one instruction added to every query.

Where the instruction goes (``method.position``):

- ``system``: a system message before the conversation. When the model's chat template
  has no system role (detected from the template by :attr:`calib.model.VLM.supports_system_role`),
  the instruction is folded into the first user turn instead, as a leading text part
  ``"<instruction>\\n\\n"`` — the same thing Gemma's own template does with a system message.
- ``prefix``: ``"<instruction>\\n\\n<query>"`` in the query's text part (the image stays first).
- ``suffix``: ``"<query>\\n\\n<instruction>"``.

The texts are presets written in ``conf/method/prompting.yaml`` (``method.presets``);
``method.preset=custom`` takes ``method.custom_text`` or ``method.custom_file``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from calib.chat import default_conversation, text_part
from calib.errors import ConfigError
from calib.model import VLM
from calib.types import Conversation, Sample

POSITIONS = ("system", "prefix", "suffix")
CUSTOM = "custom"
SEPARATOR = "\n\n"


def add_instruction(
    conversation: Conversation, instruction: str, position: str, *, system_role: bool
) -> Conversation:
    """A copy of ``conversation`` with ``instruction`` placed at ``position``.

    Args:
        conversation: messages whose *last* user turn is the query.
        instruction: the text to add.
        position: one of :data:`POSITIONS`.
        system_role: whether the chat template accepts a system message; when it does not,
            ``system`` is folded into the first user turn.
    """
    messages = [{**m, "content": list(m["content"])} for m in conversation]
    if position == "system":
        if system_role:
            return [{"role": "system", "content": [text_part(instruction)]}, *messages]
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"].insert(0, text_part(instruction + SEPARATOR))
        return messages
    query = next(m for m in reversed(messages) if m["role"] == "user")
    index = max(i for i, part in enumerate(query["content"]) if part["type"] == "text")
    text = query["content"][index]["text"]
    joined = (
        instruction + SEPARATOR + text if position == "prefix" else text + SEPARATOR + instruction
    )
    query["content"][index] = text_part(joined)
    return messages


class PromptingMethod:
    """Adds a calibration instruction to every query (nothing to learn).

    Args:
        preset: a key of ``presets``, or ``custom``.
        position: ``system``, ``prefix`` or ``suffix`` (see the module docstring).
        presets: preset name -> instruction text (written in the YAML).
        custom_text: the instruction when ``preset=custom``.
        custom_file: a UTF-8 file holding the instruction when ``preset=custom``.
    """

    def __init__(
        self,
        preset: str,
        position: str,
        presets: Mapping[str, str],
        custom_text: str | None = None,
        custom_file: str | None = None,
    ) -> None:
        self.preset = preset
        self.position = position
        self.instruction = _instruction(preset, position, presets, custom_text, custom_file)
        self._system_role: bool | None = None

    def fit(self, vlm: VLM, samples: Sequence[Sample], workdir: Path) -> None:
        """Learns nothing; records whether the model's template has a system role."""
        self._system_role = bool(vlm.supports_system_role)
        (Path(workdir) / "instruction.txt").write_text(self.instruction + "\n", encoding="utf-8")

    def conversation(self, sample: Sample) -> Conversation:
        if self.position == "system" and self._system_role is None:
            raise RuntimeError(
                "PromptingMethod.conversation() needs fit(vlm, ...) first: with "
                "method.position=system it must know whether the model has a system role"
            )
        return add_instruction(
            default_conversation(sample),
            self.instruction,
            self.position,
            system_role=bool(self._system_role),
        )

    def active(self, vlm: VLM) -> AbstractContextManager[None]:
        return nullcontext()

    def fingerprint(self) -> str:
        placement = self.position
        if self.position == "system" and self._system_role is False:
            placement = "system-folded-into-user"
        payload = {"method": "prompting", "placement": placement, "instruction": self.instruction}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"prompting-{self.preset}-{placement}-{digest[:16]}"


def _instruction(
    preset: str,
    position: str,
    presets: Mapping[str, str],
    custom_text: str | None,
    custom_file: str | None,
) -> str:
    """The instruction text; every configuration problem is reported at once."""
    problems = []
    if position not in POSITIONS:
        problems.append(f"method.position={position!r} must be one of {', '.join(POSITIONS)}")
    if CUSTOM in presets:
        problems.append(f"method.presets.{CUSTOM} is reserved: use method.custom_text instead")
    choices = [*sorted(presets), CUSTOM]
    text = None
    if preset == CUSTOM:
        text = _custom_text(custom_text, custom_file, problems)
    else:
        if custom_text is not None or custom_file is not None:
            key = "method.custom_text" if custom_text is not None else "method.custom_file"
            problems.append(f"{key} is set but method.preset={preset!r}: set method.preset=custom")
        if preset not in presets:
            problems.append(
                f"method.preset={preset!r} is unknown; choose one of {', '.join(choices)}"
            )
        else:
            text = presets[preset]
            if not isinstance(text, str) or not text.strip():
                problems.append(f"method.presets.{preset} is empty: write the instruction text")
    if problems:
        raise ConfigError(problems)
    assert text is not None
    return text.strip()


def _custom_text(
    custom_text: str | None, custom_file: str | None, problems: list[str]
) -> str | None:
    if (custom_text is None) == (custom_file is None):
        problems.append(
            "method.preset=custom needs exactly one of method.custom_text='...' or "
            "method.custom_file=/path/to/instruction.txt"
        )
        return None
    if custom_file is not None:
        path = Path(custom_file).expanduser()
        if not path.is_file():
            problems.append(f"method.custom_file={custom_file} is not a readable file")
            return None
        custom_text = path.read_text(encoding="utf-8")
    if not custom_text or not custom_text.strip():
        source = "method.custom_file" if custom_file is not None else "method.custom_text"
        problems.append(f"{source} gives an empty instruction: write the instruction text")
        return None
    return custom_text
