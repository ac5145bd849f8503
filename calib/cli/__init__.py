"""The console programs, one module each, all in one style (see :mod:`calib.cli.common`)."""
