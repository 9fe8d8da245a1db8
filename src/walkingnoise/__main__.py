"""``python -m walkingnoise`` runs the ``walking-noise`` command."""

import sys

from walkingnoise._command import main

sys.exit(main())
