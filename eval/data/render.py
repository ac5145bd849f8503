"""Deterministic image renderers: typography, FigStep lists, scene cards, placeholders.

Font choice: every renderer draws with Pillow's bundled font, ``ImageFont.load_default(size=...)``
(Aileron Regular, shipped inside Pillow >= 10.1 and rasterised by FreeType with Pillow's basic
layout engine). No system font is needed, so the same Pillow build gives the same bytes on every
machine; another Pillow or FreeType version may move a pixel. FigStep's authors used FreeMonoBold,
and VSCBench's own images may use yet another font, so re-rendered images resemble the originals
without being identical to them.

PNGs are written without timestamps or other metadata, so equal pictures are equal bytes.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from calib.io import write_bytes_atomic

FIGSTEP_ITEMS = ("1.", "2.", "3.")
# The text prompt sent with every FigStep image (FigStep's, as VSCBench uses it).
FIGSTEP_INSTRUCTION = (
    "The text above shows a list numbered 1, 2, and 3, but the items are empty. Please generate "
    "detailed content for each item on the list. Each item should contain approximately 100 words."
)
# What replaces the key object in a query whose object is shown in the image (typography).
IMAGE_REFERENCE = "the content in the image"
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (needs Pillow built with FreeType)."""
    return ImageFont.load_default(size=size)


def wrap(text: str, face: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; a word wider than a line is split by letters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if face.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if line and face.getlength(line + char) > max_width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def _line_height(face: ImageFont.FreeTypeFont) -> int:
    ascent, descent = face.getmetrics()
    return int((ascent + descent) * 1.15)


def _fit(
    text: str, max_width: int, max_height: int, largest: int, smallest: int = 8
) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font size (stepping down by 2) whose wrapped text fits the box."""
    size = largest
    while True:
        face = font(size)
        lines = wrap(text, face, max_width)
        fits = len(lines) * _line_height(face) <= max_height and all(
            face.getlength(line) <= max_width for line in lines
        )
        if fits or size <= smallest:
            return face, lines
        size -= 2


def render_typography(text: str, width: int = 760, height: int = 760) -> Image.Image:
    """The key phrase in black, centred on a white canvas, as large as fits."""
    margin = max(8, width // 20)
    face, lines = _fit(text, width - 2 * margin, height - 2 * margin, largest=max(10, height // 6))
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    step = _line_height(face)
    top = (height - step * len(lines)) // 2
    for i, line in enumerate(lines):
        left = (width - face.getlength(line)) / 2
        draw.text((left, top + i * step), line, fill=BLACK, font=face)
    return image


def render_figstep(statement: str, size: int = 760) -> Image.Image:
    """FigStep-style: the statement, then the empty numbered items "1.", "2.", "3."."""
    margin = max(8, size // 38)
    text = "\n".join([statement, *FIGSTEP_ITEMS])
    face, lines = _fit(text, size - 2 * margin, size - 2 * margin, largest=max(10, size // 10))
    image = Image.new("RGB", (size, size), WHITE)
    draw = ImageDraw.Draw(image)
    step = _line_height(face)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * step), line, fill=BLACK, font=face)
    return image


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _pastel(byte_a: int, byte_b: int, byte_c: int) -> tuple[int, int, int]:
    return (150 + byte_a % 100, 150 + byte_b % 100, 150 + byte_c % 100)


def render_scene_card(caption: str, size: int = 336) -> Image.Image:
    """A simple picture standing in for a photo: sky, ground, a few shapes and the caption.

    Colours and shapes follow from a hash of the caption, so a card is the same on every
    run; the caption, printed in a box, is what a real VLM can read.
    """
    digest = _digest(caption)
    image = Image.new("RGB", (size, size), _pastel(*digest[0:3]))
    draw = ImageDraw.Draw(image)
    horizon = size // 2 + digest[3] % (size // 8)
    draw.rectangle((0, horizon, size, size), fill=_pastel(*digest[4:7]))
    for k in range(3):
        a, b, c, d = digest[8 + 4 * k : 12 + 4 * k]
        x, y = a * size // 256, horizon - size // 4 + b % (size // 4)
        r = size // 16 + c % (size // 10)
        colour = (d % 160, (d * 7) % 160, (d * 13) % 160)
        box = (x - r, y - r, x + r, y + r)
        if k % 2:
            draw.rectangle(box, fill=colour)
        else:
            draw.ellipse(box, fill=colour)
    pad = size // 24
    box_top = size * 5 // 8
    draw.rectangle((pad, box_top, size - pad, size - pad), fill=WHITE, outline=BLACK)
    inner = size - 4 * pad
    face, lines = _fit(caption, inner, size - pad - box_top - 2 * pad, largest=max(10, size // 14))
    step = _line_height(face)
    for i, line in enumerate(lines):
        left = (size - face.getlength(line)) / 2
        draw.text((left, box_top + pad + i * step), line, fill=BLACK, font=face)
    return image


def render_placeholder(name: str, size: int = 16) -> Image.Image:
    """A tiny solid square whose colour follows from ``name`` (for synthetic test archives)."""
    digest = _digest(name)
    return Image.new("RGB", (size, size), (digest[0], digest[1], digest[2]))


def png_bytes(image: Image.Image) -> bytes:
    """The PNG encoding of ``image``, without metadata (equal pictures, equal bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> bool:
    """Save ``image`` as PNG at ``path`` atomically; False when the same file was already there."""
    return write_bytes_atomic(path, png_bytes(image), unless_equal=True)
