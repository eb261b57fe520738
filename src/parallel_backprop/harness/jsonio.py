"""The harness's JSON documents: written atomically, read back with one-line errors.

A document may hold records (:mod:`.records`) while it is being built;
:func:`plain` turns them into the dicts the file holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import PbpError
from ..fileio import write_json


def plain(value):
    """``value`` with every record (anything with ``to_dict``) replaced by its dict."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def write_document(path: str | os.PathLike, doc: dict) -> None:
    """Write ``doc`` (records and all) to ``path`` atomically."""
    write_json(path, plain(doc))


def load_document(path: str | os.PathLike, schema: str, *, kind: str,
                  label: str | None = None) -> dict:
    """The JSON document at ``path`` if its ``schema`` is ``schema``; else a one-line
    :class:`PbpError` that starts with ``label`` (default: the path) and names ``kind``."""
    label = str(path) if label is None else label
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PbpError(f"{label}: cannot read it as JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        raise PbpError(f"{label}: not a {kind} (expected schema {schema})")
    return doc


__all__ = ["load_document", "plain", "write_document"]
