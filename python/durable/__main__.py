"""``python -m durable``: the ``durable`` command."""

from .cli import main

main()
