"""``python -m openflash ...`` is the ``flash`` command."""

from openflash.cli import main

main()
