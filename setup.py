"""Which packages the wheel holds; everything else about the project is in pyproject.toml.

The configs live at the top of the repository (``conf/``, where people look for them) and
ship inside the wheel as the package data of ``calib.conf``, so that a non-editable install
finds them (:func:`calib.cli.common.config_dir`).
"""

from setuptools import find_namespace_packages, find_packages, setup

CONF_PACKAGES = ["calib.conf", *(f"calib.conf.{name}" for name in find_namespace_packages("conf"))]

setup(
    packages=[*find_packages(include=["calib*", "train*", "eval*"]), *CONF_PACKAGES],
    package_dir={"calib.conf": "conf"},
    package_data={
        "": ["*.yaml", "*.json", "*.txt", "*.safetensors", "*.md", "*.jinja"],
        "calib.model.organism": ["weights/*"],  # the shipped organism (not a package)
    },
)
