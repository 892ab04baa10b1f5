"""``python -m e2ee.cli``: the ``e2ee`` command without the console script."""

from e2ee.cli.main import run

run()
