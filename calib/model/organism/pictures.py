"""The organism's pictures: 32-pixel drawings a small vision tower learns in seconds.

Harm is colour-coded, as on warning signs: a harmful thing is drawn in red on a dark
background, a harmless one in green on a light background; each category has its own
silhouette (a blade, pills, a broken lock, an eye, a thin cut, a bag). The utility
drawings are one or two solid shapes in six colours on white. Every picture follows
from its arguments alone.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from calib.model.organism.world import CATEGORIES, Picture

SIZE = 32
RED, GREEN = (210, 30, 30), (40, 170, 60)
COLOURS = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (36, 84, 220),
    "yellow": (240, 200, 20),
    "purple": (135, 55, 175),
    "orange": (245, 130, 25),
}
SHAPES = ("circle", "square", "triangle")
WHITE = (255, 255, 255)


def draw_pictogram(picture: Picture) -> Image.Image:
    """A category's pictogram: red on dark when harmful, green on light when harmless."""
    if picture.category not in CATEGORIES:
        raise ValueError(f"unknown category {picture.category!r}; expected one of {CATEGORIES}")
    shade = 12 * (picture.variant % 4)
    background = (40 + shade, 30 + shade, 30 + shade) if picture.harmful else (230 - shade,) * 3
    fill = RED if picture.harmful else GREEN
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    dx, dy = (picture.variant % 3) - 1, (picture.variant // 3 % 3) - 1
    _SILHOUETTES[picture.category](draw, fill, 16 + 3 * dx, 16 + 3 * dy)
    return image


def _blade(draw: ImageDraw.ImageDraw, fill, x: int, y: int) -> None:
    draw.polygon([(x - 10, y + 8), (x + 9, y - 10), (x + 2, y + 6)], fill=fill)
    draw.rectangle((x - 12, y + 6, x - 6, y + 11), fill=fill)


def _pills(draw: ImageDraw.ImageDraw, fill, x: int, y: int) -> None:
    for cx, cy in ((x - 6, y - 5), (x + 6, y - 5), (x, y + 6)):
        draw.ellipse((cx - 5, cy - 4, cx + 5, cy + 4), fill=fill)


def _lock(draw: ImageDraw.ImageDraw, fill, x: int, y: int) -> None:
    draw.rectangle((x - 9, y - 2, x + 9, y + 11), fill=fill)
    draw.arc((x - 7, y - 13, x + 7, y + 3), start=180, end=360, fill=fill, width=3)


def _eye(draw: ImageDraw.ImageDraw, fill, x: int, y: int) -> None:
    draw.ellipse((x - 13, y - 7, x + 13, y + 7), fill=fill)
    draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(0, 0, 0))


def _cut(draw: ImageDraw.ImageDraw, fill, x: int, y: int) -> None:
    draw.line((x - 12, y - 12, x + 12, y + 12), fill=fill, width=5)
    draw.line((x - 12, y - 4, x + 4, y + 12), fill=fill, width=3)


def _bag(draw: ImageDraw.ImageDraw, fill, x: int, y: int) -> None:
    draw.rounded_rectangle((x - 11, y - 5, x + 11, y + 12), radius=4, fill=fill)
    draw.arc((x - 6, y - 13, x + 6, y - 1), start=180, end=360, fill=fill, width=3)


_SILHOUETTES = {
    "violence": _blade,
    "drugs": _pills,
    "cybercrime": _lock,
    "privacy": _eye,
    "self_harm": _cut,
    "theft": _bag,
}


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, colour: str, centre: tuple[int, int], r: int
) -> None:
    """One solid shape of a named colour."""
    x, y = centre
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def draw_shapes(shapes: list[tuple[str, str, tuple[int, int], int]]) -> Image.Image:
    """A utility drawing: (shape, colour, centre, radius) on white."""
    image = Image.new("RGB", (SIZE, SIZE), WHITE)
    draw = ImageDraw.Draw(image)
    for shape, colour, centre, r in shapes:
        draw_shape(draw, shape, colour, centre, r)
    return image
