"""What every console program shares: where the configs live, composing them, one style.

Every program is ``main(argv=None) -> int`` built on :func:`program` (argparse with the
module docstring as ``--help``) and run through :func:`run_program`, which prints the
project's own errors (:data:`calib.errors.USER_ERRORS`: a config key, a file, a fix) as
one message and exits 2, and keeps the traceback for everything else (a bug). Programs
that take Hydra overrides (``key=value``) compose them with :func:`compose_config`, the
way ``calib-run`` composes its own, from the same config folder.

``calib-run`` itself is a Hydra application (``@hydra.main``), for ``--multirun``,
launchers and sweepers; :func:`hydra_app` builds it on the same folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from calib.errors import USER_ERRORS
from calib.runfolder import unique_dir

# ``${calib_unique:<folder>}`` in conf/hydra/default.yaml: a folder of this run's own.
if not OmegaConf.has_resolver("calib_unique"):
    OmegaConf.register_new_resolver("calib_unique", unique_dir, use_cache=True)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the installed ``calib`` package


@lru_cache(maxsize=1)
def config_dir() -> Path:
    """The ``conf/`` folder: inside the package in a wheel install, at the repo top otherwise.

    A wheel carries the configs as ``calib/conf/`` (package data); a source checkout or an
    editable install reads the repository's own ``conf/``, where people look for it.
    """
    for candidate in (PACKAGE_ROOT / "conf", PACKAGE_ROOT.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"vsc-calib's configs are missing: neither {PACKAGE_ROOT / 'conf'} nor "
        f"{PACKAGE_ROOT.parent / 'conf'} holds config.yaml. Reinstall the package."
    )


def compose_config(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    *,
    job_name: str = "calib",
    return_hydra_config: bool = False,
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides, as ``calib-run`` would."""
    with initialize_config_dir(str(config_dir()), version_base=None, job_name=job_name):
        return compose(
            config_name=config_name,
            overrides=list(overrides),
            return_hydra_config=return_hydra_config,
        )


def resolved_paths(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The ``paths`` group (cache and output folders) as a run with these overrides sees it."""
    return OmegaConf.to_container(compose_config(overrides).paths, resolve=True)


def program(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` shows the module docstring as written."""
    return argparse.ArgumentParser(
        prog=prog,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def user_error_message(prog: str, error: BaseException) -> str:
    return f"{prog}: error: {error}"


def run_program(prog: str, body: Callable[[], int]) -> int:
    """Run a program's body; a user error is printed as one message and exits 2."""
    try:
        return body()
    except (*USER_ERRORS, HydraException, OmegaConfBaseException) as error:
        print(user_error_message(prog, error), file=sys.stderr)
        return 2
