"""``python -m oodgen``: the same as the ``oodgen`` command."""
import sys

from .cli import main

sys.exit(main())
