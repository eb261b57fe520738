"""Plugins: a user's modules that register activations, executors or data sets.

A plugin is a module name (``mypackage.activations``) or the path of a
``.py`` file; importing it runs its ``register_activation``,
``register_executor`` or ``register_dataset`` calls, so that ``pbp
--plugin MODULE`` makes ``--activation``, ``--executor`` and ``--dataset``
accept what it registers. Registries live in each process, so every process
a command starts imports the plugins again: MPI ranks started by
``--ranks`` re-run the whole command line, ``--plugin`` included; the
benchmark workers, the study's training runs and ``pbp tune``'s candidate
processes are handed the list.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

from .errors import ConfigError
from .fileio import one_line

LOADED: list[str] = []   # the plugins imported so far, as given, in order: handed to
                         # the processes a command starts


def load_plugin(spec: str) -> ModuleType:
    """Import the plugin ``spec`` (module name or .py file); a one-line ConfigError if it fails."""
    is_file = spec.endswith(".py") or "/" in spec or "\\" in spec
    try:
        module = _import_file(Path(spec)) if is_file else importlib.import_module(spec)
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:   # a plugin's own failure, whatever it is
        raise ConfigError(f"--plugin {spec}: cannot import it ({one_line(exc)})") from None
    if spec not in LOADED:
        LOADED.append(spec)
    return module


def load_plugins(specs: Iterable[str]) -> None:
    """Import every plugin of ``specs`` (see :func:`load_plugin`)."""
    for spec in specs:
        load_plugin(spec)


def _import_file(path: Path) -> ModuleType:
    """Import a .py file as the module named after it, importable by that name from now on.

    The file itself is loaded (not whatever ``import NAME`` would find), and a
    name that another module already has is refused rather than shadowed.
    """
    if not path.is_file():
        raise ConfigError(f"--plugin {path}: no such file; expected a module name or a .py file")
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(f"--plugin {path}: {name!r} is not a Python module name; rename "
                          "the file (letters, digits and underscores)")
    existing = sys.modules.get(name)
    if existing is not None and _origin(existing) == path.resolve():
        return existing                      # loaded already, by this process
    other = existing or importlib.util.find_spec(name)
    if other is not None and _origin(other) != path.resolve():
        raise ConfigError(f"--plugin {path}: the module name {name!r} is already taken "
                          f"(by {_origin(other) or 'a built-in module'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _origin(module) -> Path | None:
    """Where a module (or a module spec) was loaded from, if from a file."""
    where = getattr(module, "__file__", None) or getattr(module, "origin", None)
    return Path(where).resolve() if where and Path(where).is_file() else None
