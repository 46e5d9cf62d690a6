"""Hand-made OCI layer blobs for unpack and rootfs tests (tar written with ``tarfile``)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
MTIME = 1_700_000_000
# security.capability v2 granting cap_net_raw (13), effective: what `setcap cap_net_raw+ep`
# writes.
CAP_NET_RAW = b"\x01\x00\x00\x02" + (1 << 13).to_bytes(4, "little") + bytes(12)


@dataclass(frozen=True)
class LayerFile:
    """A layer blob on disk, shaped like ``fledge.oci.image.Layer``."""

    digest: str
    media_type: str
    size: int
    path: Path


@dataclass(frozen=True)
class Member:
    """One tar entry."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    device: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, bytes], ...] = ()

    def tarinfo(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.type = self.type
        info.mode = self.mode
        info.uid, info.gid = self.uid, self.gid
        info.mtime = MTIME
        info.linkname = self.link
        info.devmajor, info.devminor = self.device
        info.size = len(self.data) if self.type == tarfile.REGTYPE else 0
        if self.xattrs:
            # PAX values are written as UTF-8 by tarfile; surrogateescape keeps raw bytes raw.
            info.pax_headers = {
                f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                for key, value in self.xattrs
            }
        return info


def file(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: object) -> Member:
    return Member(name, data=data.encode() if isinstance(data, str) else data, mode=mode, **kw)  # type: ignore[arg-type]


def folder(name: str, mode: int = 0o755, **kw: object) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=mode, **kw)  # type: ignore[arg-type]


def symlink(name: str, target: str) -> Member:
    return Member(name, tarfile.SYMTYPE, mode=0o777, link=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, tarfile.LNKTYPE, link=target)


def chardev(name: str, major: int, minor: int, mode: int = 0o666) -> Member:
    return Member(name, tarfile.CHRTYPE, mode=mode, device=(major, minor))


def fifo(name: str, mode: int = 0o600) -> Member:
    return Member(name, tarfile.FIFOTYPE, mode=mode)


def whiteout(path: str) -> Member:
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(folder_path: str) -> Member:
    return file(f"{folder_path.rstrip('/')}/.wh..wh..opq")


def tar_bytes(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = member.tarinfo()
            archive.addfile(info, io.BytesIO(member.data) if info.isreg() else None)
    return buffer.getvalue()


def make_layer(
    folder_path: Path,
    members: list[Member],
    *,
    compression: str = "gzip",
    media_type: str | None = None,
) -> LayerFile:
    """Write a layer blob (named by its digest) into ``folder_path``."""
    raw = tar_bytes(members)
    if compression == "gzip":
        blob = gzip.compress(raw, mtime=0)
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor().compress(raw)
    else:
        blob = raw
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    folder_path.mkdir(parents=True, exist_ok=True)
    path = folder_path / digest.replace(":", "-")
    path.write_bytes(blob)
    return LayerFile(digest, media_type or MEDIA_TYPES[compression], len(blob), path)
