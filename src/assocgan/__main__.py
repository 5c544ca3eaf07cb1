"""``python -m assocgan ...`` is the ``assocgan`` command (also under ``torchrun -m``)."""

import sys

from .cli import main

sys.exit(main())
