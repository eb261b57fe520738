"""Plugins: modules that register executors (or anything else) when imported.

A plugin is a module name (``my_package.executors``) or the path of a
``.py`` file. The harness imports the plugins in every process it starts,
so that an executor registered by one is known to the workers too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Iterable

from ..errors import PbpError
from ..fileio import one_line


def load_plugins(plugins: Iterable[str]) -> None:
    """Import every plugin once; a one-line :class:`PbpError` for one that fails."""
    for plugin in plugins:
        try:
            if plugin.endswith(".py") or "/" in plugin:
                _load_file(Path(plugin))
            else:
                importlib.import_module(plugin)
        except Exception as exc:  # a plugin may raise anything while it imports
            raise PbpError(f"plugin {plugin}: cannot import it ({one_line(exc)})") from None


def _load_file(path: Path) -> None:
    # One module per file, named after its resolved path, so that loading it
    # again (the harness does so in each process) finds it in sys.modules.
    name = "pbp_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


__all__ = ["load_plugins"]
