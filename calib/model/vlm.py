"""The :class:`VLM` wrapper: chat rendering, encoding, batched generation, hidden states.

Built by :func:`calib.model.load.load_vlm`; every stage and calibration method talks to the
model through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature

from calib.chat import conversation_images
from calib.errors import ImageLoadError
from calib.types import Conversation

_SYSTEM_PROBE = "vsc-calib-system-probe"


def load_image(image: object) -> Image.Image:
    """A conversation's image part as an RGB PIL image (from a path or a PIL image)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(str(image))
    if not path.is_file():
        raise ImageLoadError(f"Image file not found: {path}")
    try:
        with Image.open(path) as handle:
            return handle.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageLoadError(f"Cannot read image file {path}: {err}") from err


class VLM:
    """A loaded vision-language model with what every stage and method needs.

    Attributes:
        model: the ``transformers`` model (eval mode).
        processor: its processor; ``tokenizer`` is ``processor.tokenizer`` (left padding).
        name: the config's ``model.name``.
        identity: what the weights are, for cache keys: ``<hub id>@<commit>`` for hub
            models, ``local:<content hash>`` (see :func:`calib.model.folder_identity`) for folders.
        device, dtype: where the model lives and its parameter dtype.
        decoder_layers: the text decoder's ``ModuleList`` (via ``model.get_decoder()``).
        decoder_prefix: module path of the decoder in ``model`` (``model.language_model``).
        layers_prefix: module path of ``decoder_layers`` (``model.language_model.layers``).
        num_layers, hidden_size: of the text decoder.
        supports_system_role: whether the chat template renders a system message.
    """

    def __init__(self, model, processor, *, name: str, identity: str, device: torch.device) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name
        self.identity = identity
        self.device = device
        self.dtype = model.dtype
        decoder = model.get_decoder()
        self.decoder_prefix = _module_path(model, decoder)
        self.decoder_layers = _find_layers(decoder, model.config.get_text_config())
        self.layers_prefix = _module_path(model, self.decoder_layers)
        self.num_layers = len(self.decoder_layers)
        self.hidden_size = model.config.get_text_config().hidden_size
        self.supports_system_role = self._probe_system_role()

    def __repr__(self) -> str:
        return f"VLM(name={self.name!r}, identity={self.identity!r}, device={self.device})"

    # --- chat ---------------------------------------------------------------------------

    def render(
        self, conversations: Sequence[Conversation], add_generation_prompt: bool = True
    ) -> list[str]:
        """The chat-template text of each conversation (image parts as placeholders)."""
        return [
            self.processor.apply_chat_template(
                list(conversation), add_generation_prompt=add_generation_prompt, tokenize=False
            )
            for conversation in conversations
        ]

    def encode(self, conversations: Sequence[Conversation]) -> BatchFeature:
        """Model inputs for a batch: rendered, tokenized, left-padded, images loaded.

        Raises:
            ImageLoadError: an image path is missing or unreadable (names the file).
        """
        texts = self.render(conversations)
        images = [[load_image(x) for x in conversation_images(c)] for c in conversations]
        bos = self.tokenizer.bos_token
        # A template that writes the BOS itself must not get a second one from the tokenizer.
        add_special = not (bos and all(text.startswith(bos) for text in texts))
        if self.needs_images:
            batch = self._encode_images_first(texts, images)
        else:
            batch = self.processor(
                text=texts,
                images=images if any(images) else None,
                padding=True,
                padding_side="left",  # generation and last-token reads rely on it
                add_special_tokens=add_special,
                return_tensors="pt",
            )
        # Model inputs only: PaliGemma's processor returns training labels too, which must
        # never reach a forward pass (they would make it compute a loss on the prompt).
        batch.pop("labels", None)
        return batch.to(device=self.device, dtype=self.dtype)

    @property
    def needs_images(self) -> bool:
        """Whether the processor refuses a batch without images (PaliGemma's does): such
        batches are laid out by :meth:`_encode_images_first`."""
        return type(self.processor).__name__ == "PaliGemmaProcessor"

    def _encode_images_first(
        self, texts: Sequence[str], images: Sequence[Sequence[Image.Image]]
    ) -> BatchFeature:
        """PaliGemma's layout, ``<image> x n + <bos> + text + \\n``, for any batch.

        Its processor refuses a batch without images and, in a batch with some, puts the BOS
        of a text-only row inside the text (after its 6th character); this lays every row out
        the way the processor lays out a row with images, image placeholders removed from the
        text and the image tokens first, and the images through its image processor.
        """
        token = self.processor.image_token
        per_image = token * self.processor.image_seq_length
        bos = self.tokenizer.bos_token or ""
        laid = [
            f"{per_image * len(row_images)}{bos}{text.replace(token, '')}\n"
            for text, row_images in zip(texts, images, strict=True)
        ]
        batch = self.tokenizer(
            laid, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt"
        )
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])  # all prefix
        flat = [image for row_images in images for image in row_images]
        if flat:
            pixels = self.processor.image_processor(flat, return_tensors="pt")["pixel_values"]
            batch["pixel_values"] = pixels
        return BatchFeature(dict(batch))

    # --- generation ---------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        min_new_tokens: int = 0,
    ) -> list[str]:
        """Batched generation; returns only the new text (special tokens and spaces stripped).

        Greedy by default. Sampling is seeded with ``seed`` without touching the global RNG.
        ``min_new_tokens`` (> 0) keeps the end-of-sequence token away until that many new
        tokens (``calib-bench`` times fixed-length generation with it).
        """
        if not conversations:
            return []
        batch = self.encode(conversations)
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
        if do_sample:
            options.update(temperature=temperature, top_p=top_p)
        if min_new_tokens > 0:
            options["min_new_tokens"] = min_new_tokens
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            output = self.model.generate(
                **batch, **options, pad_token_id=self.tokenizer.pad_token_id
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    # --- residual stream ----------------------------------------------------------------

    @torch.inference_mode()
    def hidden_states(
        self, conversations: Sequence[Conversation], layers: Sequence[int] | None = None
    ) -> torch.Tensor:
        """The residual stream at each conversation's last prompt token.

        Index convention: ``layers=[i]`` is the *output of decoder layer i* (0-based), i.e.
        ``output_hidden_states[i + 1]`` in transformers' numbering; the embeddings are not
        included. Captured with forward hooks on ``decoder_layers`` (removed in ``finally``),
        so hooks other code installs on those layers (steering) act before the capture. A
        layer the model skips (Mllama's cross-attention layers on a text-only batch) reads as
        the last layer before it that ran: the residual stream passes it unchanged.

        Returns:
            float32 CPU tensor ``[batch, len(layers), hidden_size]`` (all layers if None).
        """
        indices = self.check_layers(layers)
        batch = self.encode(conversations)
        captured: dict[int, torch.Tensor] = {}

        def capture(index: int):
            def hook(_module, _args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                captured[index] = hidden[:, -1, :].detach().float().cpu()  # left padding

            return hook

        # Every layer up to the deepest one asked for is watched: a layer the model skips
        # (Mllama's cross-attention layers on a text-only batch) leaves the residual stream
        # as the last layer that ran made it, which is what it then reads.
        watched = range(max(indices, default=-1) + 1)
        handles = [self.decoder_layers[i].register_forward_hook(capture(i)) for i in watched]
        try:
            self.model(**batch, use_cache=False, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack([_ran_through(captured, i) for i in indices], dim=1)

    def check_layers(self, layers: Sequence[int] | None, key: str = "layers") -> list[int]:
        """Validate decoder-layer indices (negative ones count from the end)."""
        if layers is None:
            return list(range(self.num_layers))
        bad = [i for i in layers if not -self.num_layers <= i < self.num_layers]
        if bad:
            raise ValueError(
                f"{key}={list(layers)} is out of range: model has {self.num_layers} decoder "
                f"layers (0..{self.num_layers - 1})"
            )
        return [i % self.num_layers for i in layers]

    def _probe_system_role(self) -> bool:
        probe = [
            {"role": "system", "content": [{"type": "text", "text": _SYSTEM_PROBE}]},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ]
        try:
            rendered = self.render([probe])[0]
        except Exception:  # the template raises for a system role (e.g. Gemma-style)
            return False
        return _SYSTEM_PROBE in rendered


def _ran_through(captured: dict[int, torch.Tensor], index: int) -> torch.Tensor:
    """The residual stream after layer ``index``: its output, or, for a layer the model skipped,
    the output of the last layer before it that ran."""
    for i in range(index, -1, -1):
        if i in captured:
            return captured[i]
    raise RuntimeError(
        f"decoder layer {index} and every layer before it were skipped by the model: there is "
        "no residual stream to read at that depth; choose a deeper layer"
    )


def _module_path(root: torch.nn.Module, target: torch.nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def _find_layers(decoder: torch.nn.Module, text_config) -> torch.nn.ModuleList:
    """The decoder's layer list: ``decoder.layers`` or the one ModuleList of the right length."""
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, torch.nn.ModuleList):
        return layers
    count = text_config.num_hidden_layers
    candidates = [
        module
        for module in decoder.modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == count
    ]
    if len(candidates) != 1:
        raise ValueError(
            f"Cannot find the decoder layers of {type(decoder).__name__}: expected one "
            f"ModuleList of {count} layers, found {len(candidates)}"
        )
    return candidates[0]
