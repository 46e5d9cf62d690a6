"""Reading initramfs archives back: decompression by magic number and a newc parser."""

from __future__ import annotations

import gzip
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from .errors import FledgeError

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_NEWC_MAGIC = b"070701"
_OTHER_MAGICS = {
    b"\xfd7zXZ": "xz",
    b"BZh": "bzip2",
    b"\x02\x21\x4c\x18": "lz4",
    b"\x89LZO": "lzo",
    b"070707": "odc cpio",
    b"070702": "newc-crc cpio",
}
_KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class ArchiveMember:
    """One member of a newc archive."""

    path: str
    mode: int
    """Full st_mode (type and permission bits)."""
    uid: int
    gid: int
    mtime: int
    ino: int
    rdev: tuple[int, int]
    data: bytes = field(repr=False)
    """File contents (symlinks: the target)."""

    @property
    def kind(self) -> str:
        return _KINDS.get(stat.S_IFMT(self.mode), "unknown")

    @property
    def permissions(self) -> int:
        return stat.S_IMODE(self.mode)

    @property
    def target(self) -> str:
        return self.data.decode(errors="replace") if self.kind == "symlink" else ""

    @property
    def size(self) -> int:
        return len(self.data)


def compression_of(data: bytes) -> str:
    """``zstd``, ``gzip`` or ``none`` (a bare newc archive), from the magic number."""
    if data.startswith(_ZSTD_MAGIC):
        return "zstd"
    if data.startswith(_GZIP_MAGIC):
        return "gzip"
    if data.startswith(_NEWC_MAGIC):
        return "none"
    for magic, name in _OTHER_MAGICS.items():
        if data.startswith(magic):
            raise FledgeError(
                f"{name} archives are not supported: fledge reads newc cpio, "
                "plain or compressed with gzip or zstd"
            )
    raise FledgeError("not a cpio archive (no newc, gzip or zstd magic number)")


def decompress(data: bytes) -> bytes:
    """The uncompressed bytes of a plain, gzip or zstd archive (concatenated frames too)."""
    kind = compression_of(data)
    try:
        if kind == "gzip":
            return gzip.decompress(data)
        if kind == "zstd":
            out: list[bytes] = []
            rest = data
            while rest.startswith(_ZSTD_MAGIC):
                reader = zstandard.ZstdDecompressor().decompressobj()
                out.append(reader.decompress(rest))
                rest = reader.unused_data
            return b"".join(out)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise FledgeError(f"corrupt {kind} data: {exc}") from None
    return data


def parse_newc(data: bytes) -> list[ArchiveMember]:
    """Members of one or more concatenated newc archives (trailers are not listed)."""
    members: list[ArchiveMember] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding between concatenated archives
            pos += 1
            continue
        if data[pos : pos + 6] != _NEWC_MAGIC:
            raise FledgeError(f"corrupt cpio archive: no newc header at byte {pos}")
        header = data[pos : pos + 110]
        if len(header) < 110:
            raise FledgeError(f"corrupt cpio archive: truncated header at byte {pos}")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise FledgeError(f"corrupt cpio archive: bad header at byte {pos}") from None
        ino, mode, uid, gid, _nlink, mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, _ = fields
        name_end = pos + 110 + namesize
        name = data[pos + 110 : name_end - 1].decode(errors="replace")
        body = name_end + (-name_end % 4)
        end = body + size
        if end > len(data):
            raise FledgeError(f"corrupt cpio archive: {name!r} runs past the end")
        pos = end + (-end % 4)
        if name == "TRAILER!!!":
            continue
        members.append(
            ArchiveMember(name, mode, uid, gid, mtime, ino, (rmaj, rmin), data[body:end])
        )
    return members


def read_archive(path: Path) -> list[ArchiveMember]:
    """Members of the initramfs at ``path`` (compression detected)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FledgeError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_newc(decompress(raw))
    except FledgeError as exc:
        raise FledgeError(f"{path}: {exc}") from None
