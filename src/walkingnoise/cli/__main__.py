"""``python -m walkingnoise.cli`` runs the ``walking-noise`` command."""

import sys

from walkingnoise.cli import main

sys.exit(main())
