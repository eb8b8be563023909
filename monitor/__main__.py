"""``python -m monitor``: the same as the ``modelarts-monitor`` command."""

from .cli import main

main()
