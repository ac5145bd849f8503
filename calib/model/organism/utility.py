"""The organism's utility questions: colour, shape and position of simple drawings.

Each item follows from ``(seed, task, index)`` alone; the evaluated set
(``utility=organism``, seed 0) and the training mix (another seed) never share an item's
drawing and question by construction of the seeds. ``choices`` is the task's answer
vocabulary: the scorer takes the first of them the response mentions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from calib.model.organism.pictures import COLOURS, SHAPES, SIZE, draw_shapes

UTILITY_TASKS = ("colour", "shape", "position")


@dataclass(frozen=True)
class UtilityItem:
    """One question with its exact answer and the drawing it is about."""

    task: str
    index: int
    question: str
    answer: str
    choices: tuple[str, ...]
    shapes: tuple[tuple[str, str, tuple[int, int], int], ...]

    def picture(self) -> Image.Image:
        return draw_shapes(list(self.shapes))


def utility_item(seed: int, task: str, index: int) -> UtilityItem:
    """The item ``index`` of ``task``; a pure function of its arguments."""
    rng = random.Random(f"vsc-calib-organism-utility/{seed}/{task}/{index}")
    colours = sorted(COLOURS)
    if task in ("colour", "shape"):
        r = rng.randint(8, 12)
        centre = (rng.randint(r + 1, SIZE - r - 2), rng.randint(r + 1, SIZE - r - 2))
        shape, colour = rng.choice(SHAPES), rng.choice(colours)
        if task == "colour":
            question = f"What colour is the {shape} in the image? Answer with one word."
            return UtilityItem(
                task, index, question, colour, tuple(colours), ((shape, colour, centre, r),)
            )
        question = (
            "Which shape is shown in the image: circle, square or triangle? Answer with one word."
        )
        return UtilityItem(task, index, question, shape, SHAPES, ((shape, colour, centre, r),))
    if task == "position":
        (s1, s2), (c1, c2) = rng.sample(SHAPES, 2), rng.sample(colours, 2)
        horizontal = index % 2 == 0
        places = [(8, 16), (24, 16)] if horizontal else [(16, 8), (16, 24)]
        first = rng.randint(0, 1)
        sides = ("left", "right") if horizontal else ("top", "bottom")
        shapes = ((s1, c1, places[first], 6), (s2, c2, places[1 - first], 6))
        question = (
            f"Is the {c1} {s1} on the {sides[0]} or on the {sides[1]} of the image? "
            "Answer with one word."
        )
        return UtilityItem(task, index, question, sides[first], sides, shapes)
    raise ValueError(f"unknown organism utility task {task!r}; expected one of {UTILITY_TASKS}")


def utility_items(seed: int, n_per_task: int) -> list[UtilityItem]:
    """``n_per_task`` items of every task, in a fixed order."""
    return [utility_item(seed, t, i) for t in UTILITY_TASKS for i in range(n_per_task)]


def utility_answer(item: UtilityItem, rng: random.Random) -> str:
    """The right answer in one of several phrasings (only the answer from ``choices``)."""
    word = item.answer
    if item.task == "colour":
        forms = [f"{word.capitalize()}.", f"It is {word}.", f"The {item.shapes[0][0]} is {word}."]
    elif item.task == "shape":
        forms = [f"{word.capitalize()}.", f"It is a {word}.", f"The shape is a {word}."]
    else:
        forms = [f"{word.capitalize()}.", f"It is on the {word}.", f"On the {word}."]
    return rng.choice(forms)
