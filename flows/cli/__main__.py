"""``python -m flows.cli``: the ``product-studio`` command."""

from flows.cli import entrypoint

entrypoint()
