"""Modules of the user's own models: imported here and in every worker process of a sweep.

A model registered with :func:`walkingnoise.models.register_model` exists in the process that
ran the registration. ``walking-noise --import MODULE`` imports such a module before the
command runs and names it in :data:`IMPORTS_VARIABLE`, which the sweep's worker processes
inherit and import again before they build a model.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

#: Environment variable listing the modules to import, separated by commas.
IMPORTS_VARIABLE = "WALKINGNOISE_IMPORTS"


def import_user_modules(modules: Sequence[str] = ()) -> list[str]:
    """Import ``modules`` and those named in :data:`IMPORTS_VARIABLE`; record them there.

    The current directory is searched too, as ``python -m`` does. Returns the modules.

    Raises:
        ImportError: a module cannot be imported (one line naming it).
    """
    listed = [m for m in os.environ.get(IMPORTS_VARIABLE, "").split(",") if m]
    names = list(dict.fromkeys([*listed, *modules]))
    if not names:
        return names
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except SystemExit as stop:  # a script's sys.exit() at import: not the command's exit
            raise ImportError(
                f"--import {name}: the module called sys.exit({stop.code!r}) while imported"
            ) from None
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if name.endswith(".py") or "/" in name or os.sep in name:
                module = os.path.splitext(os.path.basename(name))[0]
                reason += f" (give a module name, e.g. --import {module}, not a file)"
            raise ImportError(f"--import {name}: {reason}") from None
    os.environ[IMPORTS_VARIABLE] = ",".join(names)
    return names
