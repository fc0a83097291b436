"""``python -m stratus.cli``: the same as the ``stratus`` command."""

from stratus.cli.main import main

main()
