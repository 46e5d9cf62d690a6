"""Reading archives back with libarchive: an independent reader of what the code wrote."""

from __future__ import annotations

from pathlib import Path

import libarchive


def cpio_files(path: Path) -> dict[str, bytes]:
    """The regular files of the (first) cpio archive in `path`, keyed by absolute path."""
    files: dict[str, bytes] = {}
    with libarchive.file_reader(str(path)) as archive:
        for entry in archive:
            if entry.isfile:
                files["/" + entry.pathname] = b"".join(entry.get_blocks())
    return files
