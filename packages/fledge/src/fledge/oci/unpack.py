"""Applying an image's layers, in order, to a staging root filesystem.

Each layer blob is streamed through libarchive (plain tar, gzip or zstd: the media type says
which, the blob's magic number decides). OCI whiteouts are honoured: ``.wh.NAME`` removes
``NAME`` from the layers below, ``.wh..wh..opq`` empties its folder of what the layers below
put there. An entry that replaces a folder with a non-folder removes the folder; two folders
merge, the later one's metadata winning (as Docker applies layers).

Hostile entries are refused with the layer and the offending path, before anything is written
for them: absolute paths, ``..`` components, entries whose parent is a symlink (``a -> /``
then ``a/etc/passwd``), hardlinks to absolute or ``..`` paths or to anything not already in
the image. Writes never follow a symlink (see :mod:`fledge.rootfs.staging`), so the build
touches nothing outside its staging folder whatever a layer holds.

Ownership, modes (setuid, setgid, sticky), mtimes, symlinks, hardlinks, xattrs (PAX
``SCHILY.xattr.*``/``LIBARCHIVE.xattr.*``, so ``security.capability`` too), FIFOs and device
nodes are recorded in the staging tree's table; see :class:`fledge.rootfs.staging.StagingTree`
for how they reach the image without root.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libarchive  # type: ignore[import-untyped]
from libarchive import ffi
from libarchive.exception import ArchiveError  # type: ignore[import-untyped]

from ..errors import FledgeError
from ..rootfs.staging import Inode, StagingTree, UnsafePathError, split_path

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1 << 20

_GZIP_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
_ZSTD_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
_TAR_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
        "",  # docker save archives and OCI layouts written by old tools
    }
)
_OTHER_MAGIC = {b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2", b"\x04\x22\x4d\x18": "lz4"}


class LayerBlob(Protocol):
    """A verified layer blob (``fledge.oci.image.Layer`` is one)."""

    @property
    def digest(self) -> str: ...

    @property
    def media_type(self) -> str: ...

    @property
    def path(self) -> Path: ...


@dataclass
class UnpackStats:
    """What applying the layers did."""

    layers: int = 0
    entries: int = 0
    whiteouts: int = 0
    bytes_written: int = 0
    notes: list[str] = field(default_factory=list)


def layer_compression(layer: LayerBlob) -> tuple[str, str]:
    """(``gzip``, ``zstd`` or ``none`` from the blob's magic number, what the media type
    says). An unknown media type or a compression other than these is an error."""
    media_type = layer.media_type.strip().lower()
    if media_type in _GZIP_TYPES:
        declared = "gzip"
    elif media_type in _ZSTD_TYPES:
        declared = "zstd"
    elif media_type in _TAR_TYPES:
        declared = "none"
    else:
        raise FledgeError(
            f"layer {layer.digest}: media type {layer.media_type!r} is not a layer fledge can "
            "apply (tar, tar+gzip or tar+zstd; encrypted layers are not supported)"
        )
    try:
        with open(layer.path, "rb") as blob:
            head = blob.read(8)
    except OSError as exc:
        raise FledgeError(
            f"layer {layer.digest}: cannot read {layer.path}: {exc.strerror}"
        ) from None
    for magic, name in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise FledgeError(
                f"layer {layer.digest} is {name}-compressed; fledge applies plain, gzip and "
                "zstd layers"
            )
    if head.startswith(b"\x1f\x8b"):
        return "gzip", declared
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd", declared
    return "none", declared


def apply_layers(
    layers: Sequence[LayerBlob],
    tree: StagingTree,
    *,
    note: Callable[[str], None] | None = None,
) -> UnpackStats:
    """Apply ``layers`` (bottom first) to ``tree``; every problem is a FledgeError."""
    stats = UnpackStats()
    for index, layer in enumerate(layers, start=1):
        label = f"layer {index}/{len(layers)} ({layer.digest})"
        compression, declared = layer_compression(layer)
        if compression != declared:
            said = "uncompressed" if declared == "none" else declared
            _note(stats, note, f"{label}: media type says {said}, the data is {compression}")
        _LayerApplier(tree, label, stats, note).apply(layer.path, compression)
        stats.layers += 1
    tree.finish()
    return stats


def _note(stats: UnpackStats, note: Callable[[str], None] | None, message: str) -> None:
    stats.notes.append(message)
    if note is not None:
        note(message)


# --- libarchive entry fields not wrapped by libarchive-c -------------------------------------

_lib: Any = ffi.libarchive
_lib.archive_entry_xattr_reset.argtypes = [ctypes.c_void_p]
_lib.archive_entry_xattr_reset.restype = ctypes.c_int
_lib.archive_entry_xattr_next.argtypes = [
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_char_p),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_size_t),
]
_lib.archive_entry_xattr_next.restype = ctypes.c_int


def _xattrs(entry: Any) -> dict[str, bytes]:
    pointer = entry._entry_p
    found: dict[str, bytes] = {}
    if _lib.archive_entry_xattr_reset(pointer) <= 0:
        return found
    name = ctypes.c_char_p()
    value = ctypes.c_void_p()
    size = ctypes.c_size_t()
    while _lib.archive_entry_xattr_next(pointer, name, value, size) == 0:
        if name.value is None:
            break
        data = ctypes.string_at(value, size.value) if value.value else b""
        found[os.fsdecode(name.value)] = data
    return found


def _text(raw: bytes | None) -> str:
    return os.fsdecode(raw) if raw else ""


class _LayerApplier:
    """One layer's entries applied to the tree."""

    def __init__(
        self,
        tree: StagingTree,
        label: str,
        stats: UnpackStats,
        note: Callable[[str], None] | None,
    ) -> None:
        self.tree = tree
        self.label = label
        self.stats = stats
        self.note = note
        self.added: set[str] = set()
        """Paths this layer wrote: an opaque marker keeps them."""
        self._buffer = ctypes.create_string_buffer(_CHUNK)

    def _blocks(self, entry: Any) -> Iterator[memoryview]:
        """The entry's data through one reused buffer (libarchive-c's get_blocks allocates
        and copies a whole buffer per call, which dominates for many small files)."""
        view = memoryview(self._buffer).cast("B")
        while True:
            count = ffi.read_data(entry._archive_p, self._buffer, _CHUNK)
            if count <= 0:
                return
            yield view[:count]

    def apply(self, blob: Path, compression: str) -> None:
        try:
            with libarchive.file_reader(
                str(blob), format_name="tar", filter_name=compression, block_size=_CHUNK
            ) as archive:
                for entry in archive:
                    self._entry(entry)
        except ArchiveError as exc:
            raise FledgeError(f"{self.label}: not a valid tar layer: {exc.msg}") from None

    def _entry(self, entry: Any) -> None:
        pointer = entry._entry_p
        name = _text(ffi.entry_pathname(pointer))
        what = f"{self.label}: entry {name!r}"
        if name.startswith("/"):
            raise UnsafePathError(f"{what}: absolute path (a layer path is relative to the root)")
        parts = split_path(name, what)
        rel = "/".join(parts)
        self.stats.entries += 1
        base = parts[-1] if parts else ""
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, what)
            return
        mtime_ns = 0
        if ffi.entry_mtime_is_set(pointer):
            mtime_ns = ffi.entry_mtime(pointer) * 1_000_000_000 + ffi.entry_mtime_nsec(pointer)
        inode = Inode(
            mode=ffi.entry_mode(pointer) & 0o177777,
            uid=ffi.entry_uid(pointer),
            gid=ffi.entry_gid(pointer),
            mtime_ns=max(0, mtime_ns),
            xattrs=_xattrs(entry),
        )
        hardlink = ffi.entry_hardlink(pointer)
        if hardlink:
            target = os.fsdecode(hardlink)
            if target.startswith("/"):
                raise UnsafePathError(
                    f"{what}: hardlink to the absolute path {target!r} (outside the layer)"
                )
            if not parts:
                raise UnsafePathError(f"{what}: the image root cannot be a hardlink")
            self.tree.make_hardlink(rel, target, what)
            self.added.add(rel)
            return
        kind = stat.S_IFMT(inode.mode)
        if not parts:
            if kind != stat.S_IFDIR:
                raise UnsafePathError(f"{what}: the image root can only be a folder")
            self.tree.make_directory("", inode, what)
            return
        if kind == stat.S_IFDIR:
            self.tree.make_directory(rel, inode, what)
        elif kind == stat.S_IFREG:
            size = ffi.entry_size(pointer)
            self.tree.write_file(rel, inode, self._blocks(entry), what)
            self.stats.bytes_written += size
        elif kind == stat.S_IFLNK:
            target = _text(ffi.entry_symlink(pointer))
            self.tree.make_symlink(rel, target, inode, what)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            inode.rdev = (ffi.entry_rdevmajor(pointer), ffi.entry_rdevminor(pointer))
            self.tree.make_node(rel, inode, what)
        else:
            _note(self.stats, self.note, f"{what}: skipped ({stat.filemode(inode.mode)[0]} type)")
            return
        self.added.add(rel)

    def _whiteout(self, parts: list[str], what: str) -> None:
        folder = parts[:-1]
        base = parts[-1]
        self.stats.whiteouts += 1
        if base == OPAQUE_MARKER:
            self._opaque("/".join(folder), what)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        hidden = base[len(WHITEOUT_PREFIX) :]
        if not hidden or hidden in (".", ".."):
            raise UnsafePathError(f"{what}: whiteout of {hidden!r} is not a file name")
        self.tree.remove("/".join([*folder, hidden]), what)

    def _opaque(self, folder: str, what: str) -> None:
        """Remove what the layers below put in ``folder``, keeping this layer's entries."""
        if self.tree.lstat(folder) is None:
            self.tree.make_directory(folder, Inode(stat.S_IFDIR | 0o755), what)
            self.added.add(folder)
        keep = set(self.added)
        for path in self.added:
            while "/" in path:
                path = path.rsplit("/", 1)[0]
                keep.add(path)
        self._prune(folder, keep, what)

    def _prune(self, folder: str, keep: set[str], what: str) -> None:
        for child in self.tree.children(folder):
            path = f"{folder}/{child}" if folder else child
            if path not in keep:
                self.tree.remove(path, what)
            elif stat.S_ISDIR(self.tree.table[path].mode):
                self._prune(path, keep, what)
