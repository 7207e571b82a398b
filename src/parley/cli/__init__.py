"""The ``parley`` command line (typer).

Heavy imports (the node, NATS, pykka) happen inside commands, so ``parley --help`` and shell
completion stay fast.
"""

from parley.cli.main import app, main

__all__ = ["app", "main"]
