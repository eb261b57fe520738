"""``pbp --plugin MODULE``: import a user's module before the command runs.

A plugin is a module name (``mypackage.activations``) or the path of a
``.py`` file; importing it runs its ``register_activation`` and
``register_executor`` calls, so that ``--activation`` and ``--executor``
accept what it registers. The processes a command starts see it too: MPI
ranks started by ``--ranks`` re-run the whole command line, ``--plugin``
included, and ``pbp tune``'s candidate processes (forkserver) import it
before they start.
"""

from __future__ import annotations

import importlib
import multiprocessing
import sys
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from ..fileio import one_line

LOADED: list[str] = []   # module names of the plugins imported so far, in order


def load_plugin(spec: str) -> ModuleType:
    """Import the plugin ``spec`` (module name or .py file); a one-line ConfigError if it fails."""
    is_file = spec.endswith(".py") or "/" in spec or "\\" in spec
    try:
        module = _import_file(Path(spec)) if is_file else importlib.import_module(spec)
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:   # a plugin's own failure, whatever it is
        raise ConfigError(f"--plugin {spec}: cannot import it ({one_line(exc)})") from None
    if module.__name__ not in LOADED:
        LOADED.append(module.__name__)
        # Worker processes forked from the forkserver import the plugins first.
        multiprocessing.set_forkserver_preload(["__main__", *LOADED])
    return module


def _import_file(path: Path) -> ModuleType:
    """Import a .py file as the module named after it, importable by that name from now on."""
    if not path.is_file():
        raise ConfigError(f"--plugin {path}: no such file; expected a module name or a .py file")
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(f"--plugin {path}: {name!r} is not a Python module name; rename "
                          "the file (letters, digits and underscores)")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        # Appended, not prepended: the plugin must not hide any module of that name.
        sys.path.append(folder)
    module = importlib.import_module(name)
    found = Path(getattr(module, "__file__", "") or "")
    if not found.is_file() or found.resolve() != path.resolve():
        raise ConfigError(f"--plugin {path}: the module name {name!r} is already taken "
                          f"(by {found or 'a built-in module'}); rename the file")
    return module
