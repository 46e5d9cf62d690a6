"""Host files named in fledge.toml, resolved against the config's folder, safely.

A path written inside the config's folder must stay inside it after following symlinks, so a
symlink planted in a project (``payload -> /home/me/.ssh``) can never pull host files into an
image. A path that names a place outside the folder (absolute, or climbing out with ``..``)
is the config's explicit choice and is followed as written (``/usr/bin/busybox``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import FledgeError


def resolve_source(written: str, base_dir: Path, what: str) -> Path:
    """The real path of host file or folder ``written`` (relative to ``base_dir``).

    Raises FledgeError naming ``what``, the path as written and as resolved when it does not
    exist or when a symlink on the way leads out of its tree.
    """
    base = base_dir.resolve()
    lexical = Path(os.path.normpath(base / written))
    if not os.path.lexists(lexical):
        raise FledgeError(
            f"{what}: {written!r} does not exist (resolved to {lexical}; relative paths are "
            f"relative to the config's folder {base})"
        )
    real = lexical.resolve()
    if lexical.is_relative_to(base) and not real.is_relative_to(base):
        raise FledgeError(
            f"{what}: {written!r} leads through a symlink to {real}, outside the config's "
            f"folder {base}; fledge never follows a project's symlink out of the project: "
            "write the real path if you mean it"
        )
    if not real.exists():
        raise FledgeError(f"{what}: {written!r} is a dangling symlink (resolved to {real})")
    return real


def read_host_file(written: str, base_dir: Path, what: str) -> tuple[Path, bytes]:
    """Resolve ``written`` with :func:`resolve_source`, require a regular file, read it."""
    path = resolve_source(written, base_dir, what)
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise FledgeError(f"{what}: {written!r} ({path}) is {kind}; expected a file")
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise FledgeError(f"{what}: cannot read {path}: {exc.strerror}") from None
