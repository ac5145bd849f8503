"""The organism's utility set (``utility=organism``): colour, shape and position questions.

The items come from :mod:`calib.model.organism.utility` (32-pixel drawings, exact answers);
the organism was trained on items of another seed, never on these. Scored like the
embedded set: the first word of ``meta["choices"]`` the response mentions.
"""

from __future__ import annotations

from pathlib import Path

from calib.model.organism.utility import UTILITY_TASKS, utility_items
from calib.types import Sample
from eval.data.render import save_png


class OrganismUtility:
    """``utility=organism``: ``n_per_task`` x 3 tasks of the organism's drawings."""

    def __init__(self, n_per_task: int, seed: int, cache_dir: str):
        if n_per_task < 1:
            raise ValueError(f"utility.n_per_task={n_per_task} must be at least 1")
        self.name = "organism"
        self.grader = None
        self.n_per_task, self.seed = n_per_task, seed
        self.image_dir = Path(cache_dir) / "utility_images" / f"organism-{seed}"

    def items(self) -> list[Sample]:
        """The items in a fixed order; renders any image that is not on disk yet."""
        samples = []
        for item in utility_items(self.seed, self.n_per_task):
            name = f"{item.task}-{item.index:03d}"
            path = self.image_dir / f"{name}.png"
            save_png(item.picture(), path)
            samples.append(
                Sample(
                    id=f"utility/organism/{name}",
                    prompt=item.question,
                    image=str(path),
                    label=None,
                    category=item.task,
                    condition="exact",
                    group=f"utility/organism/{name}",
                    reference=item.answer,
                    meta={"choices": list(item.choices), "set": self.name},
                )
            )
        return samples


__all__ = ["UTILITY_TASKS", "OrganismUtility"]
