"""Small random VLMs built from config alone (see :mod:`calib.model.tiny.build`)."""

from calib.model.tiny.build import ARCHS, TinySpec, build_tiny

__all__ = ["ARCHS", "TinySpec", "build_tiny"]
