"""The image being assembled: archive entries keyed by their absolute path in the guest.

Later additions replace earlier ones at the same path (so mappings can replace /init or the
agent, as upstream allowed), directories merge, and nothing may be placed under a path that
is a file or symlink in the image (writing "through" an image symlink is what let upstream's
builds touch host files).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import replace

from pluginspec.cpio import CpioEntry

from .errors import FledgeError


def guest_path(path: str, what: str) -> str:
    """``path`` normalised as an absolute guest path; ``..`` or a relative path is an error."""
    if not path.startswith("/"):
        raise FledgeError(f"{what}: {path!r} must be an absolute path inside the image")
    if ".." in path.split("/") or "\x00" in path:
        raise FledgeError(f"{what}: {path!r} leads outside the image root ('..' component)")
    return posixpath.normpath(path).replace("//", "/")


class ImageTree:
    """Entries of an image by guest path, each remembered with where it came from."""

    def __init__(self) -> None:
        self._entries: dict[str, CpioEntry] = {}
        self._origins: dict[str, str] = {}

    def add(self, entry: CpioEntry, origin: str) -> None:
        """Add or replace ``entry``; ``origin`` names its source in error messages."""
        path = guest_path(entry.path, origin)
        if path == "/":
            if entry.kind != "dir":
                raise FledgeError(f"{origin}: cannot replace the image root with a {entry.kind}")
            return
        self._make_parents(path, origin)
        existing = self._entries.get(path)
        if existing is not None and existing.kind == "dir" and entry.kind != "dir":
            inside = self._children(path)
            if inside:
                raise FledgeError(
                    f"{origin}: cannot put a {entry.kind} at {path}: it is a directory in the "
                    f"image holding {inside[0]} (from {self._origins[inside[0]]})"
                )
        self._entries[path] = entry if entry.path == path else replace(entry, path=path)
        self._origins[path] = origin

    def add_all(self, entries: Iterable[CpioEntry], origin: str) -> None:
        for entry in entries:
            self.add(entry, origin)

    def get(self, path: str) -> CpioEntry | None:
        return self._entries.get(posixpath.normpath(path))

    def origin(self, path: str) -> str | None:
        return self._origins.get(posixpath.normpath(path))

    def entries(self) -> list[CpioEntry]:
        """Every entry, sorted by path."""
        return [self._entries[path] for path in sorted(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and posixpath.normpath(path) in self._entries

    def _make_parents(self, path: str, origin: str) -> None:
        parents: list[str] = []
        parent = posixpath.dirname(path)
        while parent != "/":
            parents.append(parent)
            parent = posixpath.dirname(parent)
        for parent in reversed(parents):
            existing = self._entries.get(parent)
            if existing is None:
                self._entries[parent] = CpioEntry.directory(parent)
                self._origins[parent] = origin
            elif existing.kind != "dir":
                raise FledgeError(
                    f"{origin}: cannot put {path} into the image: {parent} is a "
                    f"{existing.kind} there (from {self._origins[parent]}), not a directory"
                )

    def _children(self, path: str) -> list[str]:
        prefix = path + "/"
        return sorted(p for p in self._entries if p.startswith(prefix))
