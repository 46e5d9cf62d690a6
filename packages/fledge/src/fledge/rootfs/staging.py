"""The root filesystem being built: a staging folder plus a table of what each inode must be.

Every write goes through directory file descriptors, one path component at a time, with
``O_NOFOLLOW``: no operation ever follows a symlink of the image, so nothing an image contains
(``etc -> /etc``, ``a -> ../../..``) can make the build touch a host file outside the staging
folder. A write whose parent path goes through a symlink is refused
(:class:`UnsafePathError`); mappings, which name guest paths, first resolve the image's
symlinks *inside* the root with :meth:`StagingTree.resolve_inside`, as the guest would.

The table (:attr:`StagingTree.table`) records the ownership, mode, device numbers, mtime and
xattrs each path must have in the image. As root they are applied to the staging folder
directly; as an ordinary user they cannot all be (chown, device nodes, ``security.*``
xattrs), and :meth:`StagingTree.fixups` lists what the disk step must still set in the image
(``debugfs`` for ext4, pseudo-file definitions for squashfs).
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FledgeError

DEFAULT_MTIME_NS = 0
"""mtime of folders fledge creates implicitly (parents missing from a layer or a mapping)."""
MAX_SYMLINK_HOPS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(FledgeError):
    """An entry would be written outside the root or through a symlink of the image."""


@dataclass(eq=False)
class Inode:
    """What one inode of the image must be. Hard-linked paths share one ``Inode``."""

    mode: int
    """Full ``st_mode``: file type and permission bits (setuid, setgid, sticky included)."""
    uid: int = 0
    gid: int = 0
    mtime_ns: int = DEFAULT_MTIME_NS
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    staged_xattrs: set[str] = field(default_factory=set)
    """xattrs that are set on the staging copy (the disk tool copies those itself)."""

    @property
    def kind(self) -> str:
        return _kind(self.mode)


@dataclass(frozen=True)
class Fixup:
    """What the disk step must still do for ``path`` (relative, no leading slash)."""

    path: str
    inode: Inode
    create: bool = False
    """The node is not in the staging folder (a device node made without root): create it."""
    owner: bool = False
    mode: bool = False
    xattrs: tuple[str, ...] = ()


def _kind(mode: int) -> str:
    return {
        stat.S_IFDIR: "directory",
        stat.S_IFREG: "file",
        stat.S_IFLNK: "symlink",
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
        stat.S_IFIFO: "FIFO",
        stat.S_IFSOCK: "socket",
    }.get(stat.S_IFMT(mode), "special file")


def split_path(path: str, what: str) -> list[str]:
    """The components of an image path (``etc/passwd``, ``./etc/``, ``/etc/passwd`` for
    guest paths); ``..``, NUL and empty names are refused."""
    if "\x00" in path:
        raise UnsafePathError(f"{what}: {path!r} contains a NUL character")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(f"{what}: {path!r} has a '..' component (it could leave the root)")
    return parts


class StagingTree:
    """A root filesystem under construction in ``root`` (an empty folder fledge owns)."""

    def __init__(self, root: Path, *, privileged: bool | None = None) -> None:
        self.root = root
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        """Whether ownership and device nodes are applied to the staging folder itself."""
        self.table: dict[str, Inode] = {"": Inode(stat.S_IFDIR | 0o755)}
        self._children: dict[str, set[str]] = {"": set()}
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._apply(self._root_fd, None, self.table[""], is_dir=True)

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> StagingTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- walking ---------------------------------------------------------------------------

    def _open_dir(self, parts: list[str], what: str, *, create: bool) -> int | None:
        """A new fd for the folder ``parts`` (never through a symlink); None if it is missing
        and ``create`` is false. Missing folders are created (root-owned, 0755)."""
        fd = os.dup(self._root_fd)
        try:
            for depth, name in enumerate(parts):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    rel = "/".join(parts[: depth + 1])
                    os.mkdir(name, 0o700, dir_fd=fd)
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    self._record(rel, Inode(stat.S_IFDIR | 0o755))
                    self._apply(child, None, self.table[rel], is_dir=True)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    self._refuse_parent(fd, parts, depth, what)
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _refuse_parent(self, fd: int, parts: list[str], depth: int, what: str) -> None:
        here = "/" + "/".join(parts[: depth + 1])
        info = os.stat(parts[depth], dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(parts[depth], dir_fd=fd)
            raise UnsafePathError(
                f"{what}: {here} is a symlink (-> {target}); fledge never writes through a "
                "symlink of the image, so an entry under it could not reach outside the root"
            )
        raise UnsafePathError(f"{what}: {here} is a {_kind(info.st_mode)}, not a directory")

    def lstat(self, path: str) -> os.stat_result | None:
        """The staging copy of ``path`` (not following symlinks); None when it is absent.

        Refuses (UnsafePathError) a path that goes through a symlink."""
        parts = split_path(path, path)
        if not parts:
            return os.fstat(self._root_fd)
        fd = self._open_dir(parts[:-1], path, create=False)
        if fd is None:
            return None
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def resolve_inside(self, guest_path: str, what: str) -> str:
        """``guest_path`` with the image's symlinks resolved as the guest would see them
        (absolute targets start at the image root); the last component is not followed.

        A chain that climbs above the root is refused, so is a loop."""
        pending = split_path(guest_path, what)
        resolved: list[str] = []
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == "..":  # from a symlink target
                if not resolved:
                    raise UnsafePathError(
                        f"{what}: {guest_path!r} resolves through a symlink that climbs above "
                        "the image root"
                    )
                resolved.pop()
                continue
            if not pending:
                resolved.append(name)
                break
            rel = "/".join([*resolved, name])
            info = self.lstat(rel)
            if info is None or not stat.S_ISLNK(info.st_mode):
                resolved.append(name)
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise UnsafePathError(f"{what}: too many symlinks resolving {guest_path!r}")
            target = self._readlink(rel)
            if "\x00" in target:
                raise UnsafePathError(f"{what}: symlink /{rel} has a NUL in its target")
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
        return "/".join(resolved)

    def _readlink(self, rel: str) -> str:
        parts = rel.split("/")
        fd = self._open_dir(parts[:-1], rel, create=False)
        assert fd is not None
        try:
            return os.readlink(parts[-1], dir_fd=fd)
        finally:
            os.close(fd)

    # --- the table -------------------------------------------------------------------------

    def _record(self, rel: str, inode: Inode) -> None:
        self.table[rel] = inode
        parent = posixpath.dirname(rel)
        self._children.setdefault(parent, set()).add(posixpath.basename(rel))
        if stat.S_ISDIR(inode.mode):
            self._children.setdefault(rel, set())

    def _forget(self, rel: str) -> None:
        for child in self._children.pop(rel, set()):
            self._forget(f"{rel}/{child}" if rel else child)
        self.table.pop(rel, None)
        parent = posixpath.dirname(rel)
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.discard(posixpath.basename(rel))

    def children(self, path: str) -> list[str]:
        """Names in folder ``path`` (relative), from the table."""
        rel = "/".join(split_path(path, path))
        return sorted(self._children.get(rel, ()))

    def paths(self) -> list[str]:
        """Every path of the image (relative, "" is the root), sorted."""
        return sorted(self.table)

    # --- writing ---------------------------------------------------------------------------

    def _parent(self, path: str, what: str) -> tuple[str, int, str]:
        parts = split_path(path, what)
        if not parts:
            raise UnsafePathError(f"{what}: the image root cannot be replaced")
        fd = self._open_dir(parts[:-1], what, create=True)
        assert fd is not None
        return "/".join(parts), fd, parts[-1]

    def _clear(self, fd: int, name: str, rel: str, *, keep_dir: bool) -> bool:
        """Remove what is at ``name`` unless it is a folder and ``keep_dir``; True if a
        folder was kept."""
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            if rel in self.table and not keep_dir:  # a node only in the table (device)
                self._forget(rel)
            return False
        if stat.S_ISDIR(info.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)
        self._forget(rel)
        return False

    def remove(self, path: str, what: str) -> bool:
        """Remove ``path`` (a folder with everything in it); False if it did not exist."""
        parts = split_path(path, what)
        if not parts:
            raise UnsafePathError(f"{what}: the image root cannot be removed")
        fd = self._open_dir(parts[:-1], what, create=False)
        if fd is None:
            return False
        try:
            rel = "/".join(parts)
            existed = rel in self.table or self._exists(fd, parts[-1])
            self._clear(fd, parts[-1], rel, keep_dir=False)
            self._forget(rel)
            return existed
        finally:
            os.close(fd)

    @staticmethod
    def _exists(fd: int, name: str) -> bool:
        try:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def make_directory(self, path: str, inode: Inode, what: str) -> None:
        """A folder at ``path``; an existing folder keeps its contents and takes ``inode``'s
        metadata, anything else there is replaced."""
        if not split_path(path, what):
            self.table[""] = inode
            self._apply(self._root_fd, None, inode, is_dir=True)
            return
        rel, fd, name = self._parent(path, what)
        try:
            if not self._clear(fd, name, rel, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=fd)
            self._record(rel, inode)
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                self._apply(child, None, inode, is_dir=True)
            finally:
                os.close(child)
        finally:
            os.close(fd)

    def write_file(
        self, path: str, inode: Inode, chunks: Iterable[bytes | memoryview], what: str
    ) -> None:
        """A regular file at ``path`` with ``chunks`` as its contents (replacing anything)."""
        rel, fd, name = self._parent(path, what)
        try:
            self._clear(fd, name, rel, keep_dir=False)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(name, flags, 0o600, dir_fd=fd)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
                self._record(rel, inode)
                self._apply(out, None, inode, is_dir=False)
            finally:
                os.close(out)
        finally:
            os.close(fd)

    def make_symlink(self, path: str, target: str, inode: Inode, what: str) -> None:
        """A symlink at ``path`` (its target is stored as given and never followed here)."""
        if not target or "\x00" in target:
            raise UnsafePathError(f"{what}: symlink {path!r} has an empty or invalid target")
        rel, fd, name = self._parent(path, what)
        try:
            self._clear(fd, name, rel, keep_dir=False)
            os.symlink(target, name, dir_fd=fd)
            self._record(rel, inode)
            self._apply(fd, name, inode, is_dir=False)
        finally:
            os.close(fd)

    def make_hardlink(self, path: str, target: str, what: str) -> None:
        """``path`` as another name of the existing non-folder ``target`` (both image paths)."""
        target_parts = split_path(target, f"{what}: hardlink target")
        target_rel = "/".join(target_parts)
        existing = self.table.get(target_rel)
        if not target_parts or existing is None:
            raise UnsafePathError(
                f"{what}: hardlink {path!r} -> {target!r}: the target is not in the image "
                "(a hardlink may only name a file an earlier entry created)"
            )
        if stat.S_ISDIR(existing.mode):
            raise UnsafePathError(f"{what}: hardlink {path!r} -> {target!r} names a folder")
        rel, fd, name = self._parent(path, what)
        try:
            if rel == target_rel:
                return
            source_fd = self._open_dir(target_parts[:-1], f"{what}: hardlink target", create=False)
            if source_fd is None:
                raise UnsafePathError(f"{what}: hardlink target {target!r} is not in the image")
            try:
                self._clear(fd, name, rel, keep_dir=False)
                if self._exists(source_fd, target_parts[-1]):
                    os.link(
                        target_parts[-1],
                        name,
                        src_dir_fd=source_fd,
                        dst_dir_fd=fd,
                        follow_symlinks=False,
                    )
                self._record(rel, existing)  # a table-only node (device) stays table-only
            finally:
                os.close(source_fd)
        finally:
            os.close(fd)

    def make_node(self, path: str, inode: Inode, what: str) -> None:
        """A device node or FIFO; without the privilege to create it, only the table has it
        (the disk step creates it in the image)."""
        rel, fd, name = self._parent(path, what)
        try:
            self._clear(fd, name, rel, keep_dir=False)
            self._record(rel, inode)
            try:
                if stat.S_ISFIFO(inode.mode):
                    os.mkfifo(name, 0o600, dir_fd=fd)
                elif self.privileged:
                    os.mknod(
                        name,
                        stat.S_IFMT(inode.mode) | 0o600,
                        os.makedev(*inode.rdev),
                        dir_fd=fd,
                    )
                else:
                    return
            except PermissionError:
                return
            self._apply(fd, name, inode, is_dir=False)
        finally:
            os.close(fd)

    def _apply(self, fd: int, name: str | None, inode: Inode, *, is_dir: bool) -> None:
        """Ownership, mode, mtime and xattrs onto the staging node (``fd``, or ``name`` in
        the folder ``fd``), as far as this process may; the rest is left for fixups()."""
        link = name is not None and stat.S_ISLNK(inode.mode)
        if self.privileged:
            try:
                if name is None:
                    os.fchown(fd, inode.uid, inode.gid)
                else:
                    os.chown(name, inode.uid, inode.gid, dir_fd=fd, follow_symlinks=False)
            except (PermissionError, OSError):
                pass  # e.g. an unmapped id in a user namespace: fixups() catches it
        if not link:
            perms = stat.S_IMODE(inode.mode)
            if not self.privileged:  # keep what the build itself needs to read and write
                perms |= 0o700 if is_dir else 0o600
            if name is None:
                os.fchmod(fd, perms)
            else:
                os.chmod(name, perms, dir_fd=fd)
            if inode.xattrs and name is None:
                for key, value in inode.xattrs.items():
                    try:
                        os.setxattr(fd, key, value)
                        inode.staged_xattrs.add(key)
                    except OSError:
                        pass
        times = (inode.mtime_ns, inode.mtime_ns)
        if name is None:
            os.utime(fd, ns=times)
        else:
            os.utime(name, ns=times, dir_fd=fd, follow_symlinks=False)

    def finish(self) -> None:
        """Restore folder mtimes (adding entries changed them), deepest first."""
        for rel in sorted(self.table, key=lambda p: p.count("/"), reverse=True):
            inode = self.table[rel]
            if not stat.S_ISDIR(inode.mode):
                continue
            times = (inode.mtime_ns, inode.mtime_ns)
            if not rel:
                os.utime(self._root_fd, ns=times)
                continue
            parts = rel.split("/")
            fd = self._open_dir(parts, rel, create=False)
            if fd is not None:
                try:
                    os.utime(fd, ns=times)
                finally:
                    os.close(fd)

    # --- what the disk step must still do --------------------------------------------------

    def fixups(self) -> list[Fixup]:
        """Every path whose staging copy differs from the table, and how (sorted by path)."""
        out: list[Fixup] = []
        for rel in self.paths():
            inode = self.table[rel]
            info = _lstat_plain(self.root, rel)
            if info is None or stat.S_IFMT(info.st_mode) != stat.S_IFMT(inode.mode):
                out.append(Fixup(rel, inode, create=True, owner=True, mode=True))
                continue
            owner = (info.st_uid, info.st_gid) != (inode.uid, inode.gid)
            mode = not stat.S_ISLNK(inode.mode) and stat.S_IMODE(info.st_mode) != stat.S_IMODE(
                inode.mode
            )
            missing = tuple(sorted(set(inode.xattrs) - inode.staged_xattrs))
            if owner or mode or missing:
                out.append(Fixup(rel, inode, owner=owner, mode=mode, xattrs=missing))
        return out

    def content_size(self) -> tuple[int, int]:
        """(bytes of file data rounded up to 4 KiB blocks, hardlinks once; number of paths)."""
        seen: set[int] = set()
        total = 0
        for rel, inode in self.table.items():
            if id(inode) in seen:
                continue
            seen.add(id(inode))
            if stat.S_ISREG(inode.mode):
                info = _lstat_plain(self.root, rel)
                size = info.st_size if info is not None else 0
                total += -(-size // 4096) * 4096
            elif stat.S_ISDIR(inode.mode):
                total += 4096 * max(1, -(-len(self._children.get(rel, ())) // 100))
            elif stat.S_ISLNK(inode.mode):
                total += 4096
        return total, len(self.table)

    def walk_files(self) -> Iterator[tuple[str, Inode]]:
        """(path, inode) for every path, sorted."""
        for rel in self.paths():
            yield rel, self.table[rel]


def _lstat_plain(root: Path, rel: str) -> os.stat_result | None:
    """lstat for reading back what this tree wrote (its folders are never symlinks)."""
    try:
        return os.lstat(os.path.join(root, rel) if rel else root)
    except FileNotFoundError:
        return None
