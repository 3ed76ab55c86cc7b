"""Small files a node must not lose in a crash (its config with the pseudonym key, an audit
log's head): written whole to a temporary file, synced, renamed over the old one, and the
rename itself synced, since a rename lives in the folder, not in the file."""

from __future__ import annotations

import os
from pathlib import Path


def replace_durably(tmp: Path, path: Path) -> None:
    """Rename `tmp` (already written and fsynced) over `path` and fsync the folder, so that
    after a power cut the new file is there, not the old one (or none)."""
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
