"""Helpers for tests that need capture files in a given format."""

from __future__ import annotations

import json
from pathlib import Path

#: header keys later versions of the recorder added; an old-format capture has none of them
NEWER_HEADER_KEYS = ("started_at", "session")


def old_format_copy(src: Path, dest: Path) -> Path:
    """A copy of the capture ``src`` as a recorder that wrote neither ``started_at`` nor
    ``session`` would have made it: the same events, its header without those keys.

    Tests of what an old capture does build one with this, instead of relying on a shipped
    capture having been recorded before those keys existed (regenerating the shipped
    captures, as instruments/captures/README.md says, gives them both)."""
    lines = src.read_text(encoding="ascii").splitlines()
    header = json.loads(lines[0])
    for key in NEWER_HEADER_KEYS:
        header.pop(key, None)
    dest.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="ascii")
    return dest
