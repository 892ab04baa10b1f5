"""The ``e2ee`` command line."""

from e2ee.cli.main import main, run

__all__ = ["main", "run"]
