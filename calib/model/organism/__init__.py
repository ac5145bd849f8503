"""The model organism: a tiny VLM the project trains itself with a planted miscalibration.

:mod:`~calib.model.organism.world` (requests, pictures, answers and the two behaviour
rules), :mod:`~calib.model.organism.pictures` (the drawings),
:mod:`~calib.model.organism.utility` (the utility questions); the trained weights and
their card ship in ``weights/`` (``train/organism.py`` writes them).
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
