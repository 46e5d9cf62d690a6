"""``[mappings]``: host files and folders copied into the image.

- Sources are relative to the config's folder; a missing source is an error naming the path
  as written and as resolved. A source inside the config's folder reached through a symlink
  that leads out of it is an error (:mod:`fledge.sources`).
- A file keeps its permission bits (setuid, setgid and sticky are dropped); a folder is
  copied recursively with its folders' modes (sticky kept); everything is owned by root.
- Symlinks inside a mapped folder stay symlinks. Their target must be relative and stay
  inside the mapped folder; an absolute target or one that climbs out is an error naming
  the link (copying what it points to would be a silent copy of host files).
- FIFOs, sockets and device files in a mapped folder are errors.
- The destination is an absolute guest path; ``..`` is an error. A file mapped to a path
  ending in ``/`` goes into that folder under its own name. Mappings are applied in the
  order the config lists them, after busybox, init and agent, so a later mapping replaces an
  earlier entry at the same path.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from pathlib import Path

from pluginspec.cpio import CpioEntry

from .errors import FledgeError
from .sources import resolve_source
from .tree import guest_path

FILE_MODE_MASK = 0o777
DIR_MODE_MASK = 0o1777


def mapping_entries(
    source: str, destination: str, base_dir: Path, *, exclude: Iterable[Path] = ()
) -> list[CpioEntry]:
    """Archive entries for one mapping ``source`` (host) → ``destination`` (guest).

    ``exclude``: host paths a mapped folder skips (fledge's own output folder).
    """
    what = f"mapping {source!r} = {destination!r}"
    dest = guest_path(destination, what)
    real = resolve_source(source, base_dir, what)
    info = real.stat()
    if stat.S_ISREG(info.st_mode):
        if destination.endswith("/"):  # "into this folder", as cp does
            dest = posixpath.join(dest, posixpath.basename(source.rstrip("/")))
        return [CpioEntry.file(dest, _read(real, what), stat.S_IMODE(info.st_mode) & 0o777)]
    if stat.S_ISDIR(info.st_mode):
        entries = [CpioEntry.directory(dest, stat.S_IMODE(info.st_mode) & DIR_MODE_MASK)]
        skip = frozenset(path.resolve() for path in exclude)
        _walk(real, "", dest, what, entries, skip)
        return entries
    raise FledgeError(f"{what}: {real} is {_kind(info.st_mode)}, not a file or folder")


def _walk(
    root: Path, relative: str, dest: str, what: str, out: list[CpioEntry], skip: frozenset[Path]
) -> None:
    folder = root / relative if relative else root
    try:
        items = sorted(os.scandir(folder), key=lambda item: item.name)
    except OSError as exc:
        raise FledgeError(f"{what}: cannot list {folder}: {exc.strerror}") from None
    for item in items:
        rel = posixpath.join(relative, item.name) if relative else item.name
        host = root / rel
        if host in skip:
            continue
        guest = posixpath.join(dest, rel)
        info = item.stat(follow_symlinks=False)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            out.append(CpioEntry.symlink(guest, _link_target(host, rel, what)))
        elif stat.S_ISDIR(info.st_mode):
            out.append(CpioEntry.directory(guest, mode & DIR_MODE_MASK))
            _walk(root, rel, dest, what, out, skip)
        elif stat.S_ISREG(info.st_mode):
            out.append(CpioEntry.file(guest, _read(host, what), mode & FILE_MODE_MASK))
        else:
            raise FledgeError(
                f"{what}: {host} is {_kind(info.st_mode)}; a mapped folder may hold only "
                "files, folders and symlinks"
            )


def _link_target(host: Path, relative: str, what: str) -> str:
    target = os.readlink(host)
    if target.startswith("/"):
        raise FledgeError(
            f"{what}: symlink {host} -> {target} is absolute, so it points outside the mapped "
            "folder; make it relative to a file inside the folder, or map its target instead"
        )
    landing = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    if landing == ".." or landing.startswith("../"):
        raise FledgeError(
            f"{what}: symlink {host} -> {target} points outside the mapped folder; map its "
            "target instead"
        )
    return target


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FledgeError(f"{what}: cannot read {path}: {exc.strerror}") from None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"
