"""Renderers draw deterministic pictures (same bytes twice) and write files atomically."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageFont

from calib.io import write_bytes_atomic
from eval.data.render import (
    font,
    png_bytes,
    render_figstep,
    render_placeholder,
    render_scene_card,
    render_typography,
    save_png,
    wrap,
)

RENDERERS = {
    "typography": lambda text: render_typography(text, 200, 120),
    "figstep": lambda text: render_figstep(text, 160),
    "scene_card": lambda text: render_scene_card(text, 96),
    "placeholder": lambda text: render_placeholder(text, 8),
}


@pytest.mark.parametrize("name", RENDERERS)
def test_renderers_give_the_same_bytes_twice_and_differ_by_text(name):
    draw = RENDERERS[name]
    first, again = png_bytes(draw("a rusty padlock")), png_bytes(draw("a rusty padlock"))
    assert first == again
    assert first != png_bytes(draw("a garden hose"))
    assert Image.open(io.BytesIO(first)).format == "PNG"


def test_the_bundled_font_needs_no_system_font():
    assert isinstance(font(20), ImageFont.FreeTypeFont)
    assert font(20).getname()[0] == "Aileron"


def test_wrap_keeps_every_line_within_the_width():
    face = font(16)
    lines = wrap("a sentence with an extraordinarilylongwordthatcannotfit on one line", face, 60)
    assert len(lines) > 3
    assert all(face.getlength(line) <= 60 for line in lines)
    assert (
        "".join(lines).replace(" ", "")
        == "asentencewithanextraordinarilylongwordthatcannotfitononeline"
    )


def test_typography_is_black_text_centred_on_white():
    image = render_typography("a bicycle", 300, 200)
    assert image.size == (300, 200)
    box = ImageChops.invert(image.convert("L")).getbbox()
    assert box is not None, "nothing was drawn"
    left, top, right, bottom = box
    assert abs((left + right) / 2 - 150) <= 6
    assert abs((top + bottom) / 2 - 100) <= 20
    assert image.getpixel((0, 0)) == (255, 255, 255)


def ink_bands(image: Image.Image) -> list[tuple[int, int, int]]:
    """(first row, last row, rightmost inked column) of each horizontal band of ink."""
    grey = image.convert("L")
    width, height = grey.size
    bands: list[tuple[int, int, int]] = []
    for y in range(height):
        inked = [x for x in range(width) if grey.getpixel((x, y)) < 128]
        if not inked:
            continue
        if bands and bands[-1][1] == y - 1:
            first, _, right = bands[-1]
            bands[-1] = (first, y, max(right, inked[-1]))
        else:
            bands.append((y, y, inked[-1]))
    return bands


def test_figstep_statement_is_followed_by_three_empty_items():
    image = render_figstep("Ways to plant tulips.", 240)
    assert image.size == (240, 240)
    bands = ink_bands(image)
    assert len(bands) == 4, "one statement line, then 1., 2., 3."
    statement, *items = bands
    assert statement[2] > 3 * max(item[2] for item in items), "the items must be empty"


def test_save_png_writes_only_when_bytes_change(tmp_path):
    path = tmp_path / "sub" / "picture.png"
    assert save_png(render_placeholder("x"), path) is True
    assert save_png(render_placeholder("x"), path) is False
    assert write_bytes_atomic(path, png_bytes(render_placeholder("y")), unless_equal=True) is True
    assert path.read_bytes() == png_bytes(render_placeholder("y"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["picture.png"], "temp file left"
