"""``python -m fsdiff ...`` runs the ``fsdiff`` command."""

import sys

from .app.cli import main

sys.exit(main())
