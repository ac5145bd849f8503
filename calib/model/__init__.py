"""The model layer: load any Hugging Face VLM (hub id or folder) as a :class:`VLM`.

* :mod:`calib.model.vlm` -- the :class:`VLM` wrapper every stage and method talks to;
* :mod:`calib.model.load` -- :func:`load_vlm` from a ``model`` config group;
* :mod:`calib.model.tiny` -- small random VLMs built from config, for tests and demos.
"""

from calib.model.load import folder_identity, load_vlm, resolve_device
from calib.model.vlm import VLM, load_image

__all__ = ["VLM", "folder_identity", "load_image", "load_vlm", "resolve_device"]
