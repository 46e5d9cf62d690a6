"""Reproducible cpio (newc) archives: the initramfs format shared by fledge and volantd.

Entries are written sorted by path, with fixed ownership and mtime, so the same inputs always
give byte-identical archives (DESIGN.md §5). Parent directories are added automatically.
The newc writer is a few lines of struct packing: libarchive-c cannot write in-memory symlink
entries, and a hand-held header gives full control over inode numbers and timestamps.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FIXED_MTIME = 0


@dataclass(frozen=True)
class CpioEntry:
    """One archive member: a regular file (`data`), a directory, or a symlink (`target`)."""

    path: str
    mode: int = 0o644
    data: bytes = b""
    kind: str = "file"  # "file" | "dir" | "symlink" | "chardev" | "blockdev"
    target: str = ""
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node

    @classmethod
    def file(cls, path: str, data: bytes, mode: int = 0o644) -> CpioEntry:
        return cls(path=path, data=data, mode=mode)

    @classmethod
    def directory(cls, path: str, mode: int = 0o755) -> CpioEntry:
        return cls(path=path, mode=mode, kind="dir")

    @classmethod
    def symlink(cls, path: str, target: str) -> CpioEntry:
        return cls(path=path, mode=0o777, kind="symlink", target=target)

    @classmethod
    def chardev(cls, path: str, major: int, minor: int, mode: int = 0o600) -> CpioEntry:
        """A character device node: written into the archive, so no root is needed."""
        return cls(path=path, mode=mode, kind="chardev", rdev=(major, minor))


def _archive_path(path: str) -> str:
    clean = PurePosixPath("/", path)
    if ".." in clean.parts:
        raise ValueError(f"cpio entry path {path!r} must not contain '..'")
    return str(clean).lstrip("/")


def _with_parents(entries: Iterable[CpioEntry]) -> list[CpioEntry]:
    by_path: dict[str, CpioEntry] = {}
    for entry in entries:
        name = _archive_path(entry.path)
        by_path[name] = CpioEntry(**{**entry.__dict__, "path": name})
    for name in list(by_path):
        for parent in PurePosixPath(name).parents:
            key = str(parent)
            if key != "." and key not in by_path:
                by_path[key] = CpioEntry.directory(key)
    return [by_path[key] for key in sorted(by_path)]


def _newc_member(
    name: str,
    mode: int,
    body: bytes,
    ino: int,
    uid: int = 0,
    gid: int = 0,
    rdev: tuple[int, int] = (0, 0),
) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, 1, FIXED_MTIME, len(body), 0, 0, *rdev, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    pad_name = -(len(header) + len(encoded)) % 4
    return header + encoded + b"\0" * pad_name + body + b"\0" * (-len(body) % 4)


def cpio_bytes(entries: Iterable[CpioEntry]) -> bytes:
    """The uncompressed newc archive of `entries`, terminated by a TRAILER!!! record."""
    members: list[bytes] = []
    for ino, entry in enumerate(_with_parents(entries), start=1):
        if entry.kind == "dir":
            mode, body = stat.S_IFDIR | entry.mode, b""
        elif entry.kind == "symlink":
            mode, body = stat.S_IFLNK | 0o777, entry.target.encode()
        elif entry.kind in ("chardev", "blockdev"):
            kind = stat.S_IFCHR if entry.kind == "chardev" else stat.S_IFBLK
            mode, body = kind | entry.mode, b""
        else:
            mode, body = stat.S_IFREG | entry.mode, entry.data
        members.append(_newc_member(entry.path, mode, body, ino, entry.uid, entry.gid, entry.rdev))
    members.append(_newc_member("TRAILER!!!", 0, b"", 0))
    return b"".join(members)


def compress(data: bytes, compression: str | None) -> bytes:
    """Compress reproducibly (no timestamps or names in headers): None, "gzip" or "zstd"."""
    if not compression or compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    if compression == "zstd":
        import zstandard  # optional: fledge and volantd install it; pluginspec needs only pydantic

        # Level 12: within 15 % of level 19's size at a tenth of its time; guests decompress
        # zstd at the same speed whatever the level.
        return zstandard.ZstdCompressor(level=12).compress(data)
    raise ValueError(f"unknown compression {compression!r}: use none, gzip or zstd")


def write_cpio(path: Path, entries: Iterable[CpioEntry], compression: str | None = None) -> None:
    """Write `entries` as a newc archive at `path` (`compression`: None, "gzip" or "zstd")."""
    path.write_bytes(compress(cpio_bytes(entries), compression))
