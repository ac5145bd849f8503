"""The embedded utility set: visual questions the project generates and answers exactly.

Five tasks, each a simple skill a helpful VLM has and an over-cautious one may lose:

- ``colour``: one shape; "What colour is the circle?" -> ``red``
- ``shape``: one shape; "Which shape is shown: circle, square or triangle?" -> ``square``
- ``count``: 1-6 equal shapes; "How many triangles are in the image?" -> ``4``
- ``position``: two shapes side by side or one above the other; "Is the blue square on
  the left or on the right?" -> ``left``
- ``text``: a short printed word; "What word is written in the image?" -> ``lamp``

Every item follows from ``(seed, task, index)`` alone, so the set is the same on every
machine, and ``n_per_task`` only adds or removes items at the end of each task. Images are
drawn with Pillow into ``<cache_dir>/utility_images/sample-<seed>/`` (written once; a
re-run reuses them). Each item carries its task's answer vocabulary in ``meta["choices"]``:
the scorer takes the first vocabulary word the response mentions as its answer.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from calib.model.organism.pictures import COLOURS, SHAPES, draw_shape  # one palette, one drawer
from calib.types import Sample
from eval.data.render import font, save_png

TASKS = ("colour", "shape", "count", "position", "text")
WORDS = (
    "cat",
    "sun",
    "tree",
    "book",
    "fish",
    "door",
    "lamp",
    "milk",
    "bird",
    "ship",
    "rain",
    "star",
)
COUNT_CHOICES = tuple(str(n) for n in range(11))
CANVAS = 336
WHITE = (255, 255, 255)
BLACK = (20, 20, 20)

Shape = tuple[str, str, tuple[int, int], int]  # (shape, colour, centre, radius)


def render_scene(shapes: list[Shape], word: str | None = None) -> Image.Image:
    image = Image.new("RGB", (CANVAS, CANVAS), WHITE)
    draw = ImageDraw.Draw(image)
    for shape, colour, centre, r in shapes:
        draw_shape(draw, shape, colour, centre, r)
    if word is not None:
        face = font(CANVAS // 4)
        left, top, right, bottom = draw.textbbox((0, 0), word, font=face)
        origin = ((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top)
        draw.text(origin, word, fill=BLACK, font=face)
    return image


def _one_shape(rng: random.Random) -> Shape:
    r = rng.randint(50, 80)
    centre = (rng.randint(r + 20, CANVAS - r - 20), rng.randint(r + 20, CANVAS - r - 20))
    return (rng.choice(SHAPES), rng.choice(sorted(COLOURS)), centre, r)


def _grid_shapes(rng: random.Random, n: int, shape: str, colour: str) -> list[Shape]:
    """``n`` equal shapes in distinct cells of a 3x3 grid (no overlaps)."""
    cell = CANVAS // 3
    cells = rng.sample(range(9), n)
    r = cell // 3
    return [
        (shape, colour, (cell * (c % 3) + cell // 2, cell * (c // 3) + cell // 2), r) for c in cells
    ]


def _item(seed: int, task: str, index: int) -> tuple[str, str, list[str], list[Shape], str | None]:
    """(question, answer, choices, shapes, word) of one item; a pure function of its arguments."""
    rng = random.Random(f"vsc-calib-utility/{seed}/{task}/{index}")
    if task == "colour":
        shape = _one_shape(rng)
        question = f"What colour is the {shape[0]} in the image? Answer with one word."
        return question, shape[1], sorted(COLOURS), [shape], None
    if task == "shape":
        shape = _one_shape(rng)
        question = (
            "Which shape is shown in the image: circle, square or triangle? Answer with one word."
        )
        return question, shape[0], list(SHAPES), [shape], None
    if task == "count":
        n = rng.randint(1, 6)
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        question = f"How many {shape}s are in the image? Answer with a number."
        return question, str(n), list(COUNT_CHOICES), _grid_shapes(rng, n, shape, colour), None
    if task == "position":
        (s1, s2), (c1, c2) = rng.sample(SHAPES, 2), rng.sample(sorted(COLOURS), 2)
        horizontal = index % 2 == 0
        near, far = (CANVAS // 4, CANVAS * 3 // 4)
        mid = CANVAS // 2
        places = [(near, mid), (far, mid)] if horizontal else [(mid, near), (mid, far)]
        first = rng.randint(0, 1)  # which place the asked-about shape takes
        shapes = [(s1, c1, places[first], 55), (s2, c2, places[1 - first], 55)]
        sides = ["left", "right"] if horizontal else ["top", "bottom"]
        question = (
            f"Is the {c1} {s1} on the {sides[0]} or on the {sides[1]} of the image? "
            "Answer with one word."
        )
        return question, sides[first], sides, shapes, None
    if task == "text":
        word = rng.choice(WORDS)
        question = "What word is written in the image? Answer with the word only."
        return question, word, list(WORDS), [], word
    raise ValueError(f"unknown utility task {task!r}; expected one of {TASKS}")


class SampleUtility:
    """``utility=sample``: the generated VQA set (``n_per_task`` x 5 tasks)."""

    def __init__(self, n_per_task: int, seed: int, cache_dir: str):
        if n_per_task < 1:
            raise ValueError(f"utility.n_per_task={n_per_task} must be at least 1")
        self.name = "sample"
        self.grader = None  # exact answers need no grader
        self.n_per_task, self.seed = n_per_task, seed
        self.image_dir = Path(cache_dir) / "utility_images" / f"sample-{seed}"

    def items(self) -> list[Sample]:
        """The items in a fixed order; renders any image that is not on disk yet."""
        samples = []
        for task in TASKS:
            for index in range(self.n_per_task):
                question, answer, choices, shapes, word = _item(self.seed, task, index)
                path = self.image_dir / f"{task}-{index:03d}.png"
                if not path.is_file():
                    save_png(render_scene(shapes, word), path)
                samples.append(
                    Sample(
                        id=f"utility/sample/{task}-{index:03d}",
                        prompt=question,
                        image=str(path),
                        label=None,
                        category=task,
                        condition="exact",
                        group=f"utility/sample/{task}-{index:03d}",
                        reference=answer,
                        meta={"choices": choices, "set": self.name},
                    )
                )
        return samples
