"""``python -m walkingnoise`` runs the ``walking-noise`` command."""

import sys

from walkingnoise.cli import main

sys.exit(main())
