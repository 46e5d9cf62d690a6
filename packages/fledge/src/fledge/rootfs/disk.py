"""The root disk image, made from a staging tree without mounting anything.

- **ext4** (``mkfs.ext4 -d``): the staging folder is copied into a sparse file by mke2fs
  itself; what the staging copy could not hold (ownership and device nodes when the build runs
  as an ordinary user, xattrs the staging filesystem refused) is then set in the image with
  ``debugfs -w``. The file system is checked (``e2fsck -fy``), shrunk to its minimum
  (``resize2fs -M``) and grown again by the free-space buffer. Deterministic where e2fsprogs
  allows: UUID and directory hash seed derived from the build key, superblock times from
  ``SOURCE_DATE_EPOCH`` (inode change times still come from the staging folder).
- **squashfs** (``mksquashfs``): compressed, read-only (the guest puts a tmpfs overlay on top);
  ownership and device nodes an ordinary user could not stage are given as pseudo-file
  definitions; byte-reproducible for the same inputs.
- **xfs** (``mkfs.xfs -p protofile``) and **btrfs** (``mkfs.btrfs --rootdir``): built when
  their tools are installed, with the limits those tools have (see :func:`build_disk_image`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pluginspec import FilesystemConfig

from ..errors import FledgeError
from .staging import Fixup, Inode, StagingTree

MIB = 1 << 20
BLOCK_SIZE = 4096
INODE_RATIO = 8192
AUTO_BUFFER_MIN = 64 * MIB
AUTO_BUFFER_MAX = 1024 * MIB
AUTO_BUFFER_FRACTION = 0.25

TOOL_PACKAGES = {
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "mksquashfs": "squashfs-tools",
    "mkfs.xfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
}
_SBIN = ("/usr/sbin", "/sbin")


@dataclass(frozen=True)
class DiskImage:
    """A finished root disk image."""

    path: Path
    fstype: str
    size: int
    """Bytes of the file (its apparent size)."""
    content_bytes: int
    """What the staged files need, in 4 KiB blocks."""
    buffer_bytes: int
    """Free space added on purpose (ext4/xfs/btrfs); 0 for squashfs."""
    fixups: int
    """Inodes whose ownership, mode, xattrs or existence the disk step set after staging."""


Note = Callable[[str], None]


def tool(name: str) -> str:
    """The path of host tool ``name``; a missing tool is an error naming its Debian package."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if found is None:
        package = TOOL_PACKAGES.get(name, name)
        raise FledgeError(f"{name} is not installed: install the {package} package to build this")
    return found


def _run(
    args: Sequence[str],
    what: str,
    *,
    env: dict[str, str] | None = None,
    ok: tuple[int, ...] = (0,),
) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    try:
        done = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            errors="replace",
            env={**environment, **(env or {})},
            check=False,
        )
    except OSError as exc:
        raise FledgeError(f"{what}: cannot run {args[0]}: {exc.strerror}") from None
    if done.returncode not in ok:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-12:]
        raise FledgeError(
            f"{what} failed ({Path(args[0]).name} exit status {done.returncode}):\n  "
            + "\n  ".join(detail)
        )
    return done.stdout


def buffer_bytes(config: FilesystemConfig, content: int) -> int:
    """Free space to leave in an ext4/xfs/btrfs image: ``size_buffer_mb`` MiB, or with 0
    (automatic) a quarter of the content, at least 64 MiB and at most 1 GiB."""
    if config.size_buffer_mb:
        return config.size_buffer_mb * MIB
    return int(min(AUTO_BUFFER_MAX, max(AUTO_BUFFER_MIN, content * AUTO_BUFFER_FRACTION)))


def build_disk_image(
    tree: StagingTree,
    output: Path,
    config: FilesystemConfig,
    *,
    key: str,
    epoch: int | None = None,
    note: Note | None = None,
) -> DiskImage:
    """Write the image of ``tree`` to ``output`` as ``config.type`` says.

    ``key`` (hex) seeds the file system UUID; ``epoch`` is the creation time written into it
    (None: now).
    """
    builders = {
        "ext4": _Ext4,
        "squashfs": _Squashfs,
        "xfs": _Xfs,
        "btrfs": _Btrfs,
    }
    builder = builders[config.type](tree, output, config, key, epoch, note or (lambda _: None))
    return builder.build()


class _DiskBuilder:
    fstype = ""

    def __init__(
        self,
        tree: StagingTree,
        output: Path,
        config: FilesystemConfig,
        key: str,
        epoch: int | None,
        note: Note,
    ) -> None:
        self.tree = tree
        self.output = output
        self.config = config
        self.key = key
        self.epoch = epoch
        self.note = note
        self.uuid = str(uuid.UUID(bytes=bytes.fromhex(key.ljust(32, "0")[:32]), version=4))

    def build(self) -> DiskImage:
        raise NotImplementedError

    def _image(self, content: int, buffer: int, fixups: int) -> DiskImage:
        if self.config.preallocate:
            with open(self.output, "r+b") as image:
                os.posix_fallocate(image.fileno(), 0, self.output.stat().st_size)
        return DiskImage(
            path=self.output,
            fstype=self.fstype,
            size=self.output.stat().st_size,
            content_bytes=content,
            buffer_bytes=buffer,
            fixups=fixups,
        )


# --- ext4 ----------------------------------------------------------------------------------


def _debugfs_quote(path: str) -> str:
    if "\n" in path or "\r" in path:
        raise FledgeError(
            f"/{path}: a file name with a line break cannot be fixed up with debugfs; build as "
            "root (then the staging copy carries ownership itself) or rename the file in the image"
        )
    return '"' + path.replace('"', '""') + '"'


class _Ext4(_DiskBuilder):
    fstype = "ext4"

    def build(self) -> DiskImage:
        mkfs, debugfs = tool("mkfs.ext4"), tool("debugfs")
        e2fsck, resize2fs, dumpe2fs = tool("e2fsck"), tool("resize2fs"), tool("dumpe2fs")
        content, count = self.tree.content_size()
        buffer = buffer_bytes(self.config, content)
        # Generous and sparse: resize2fs -M takes it down to what the content needs. One
        # inode per 8 KiB, and at least 4 KiB per path, gives every path an inode however
        # small the files; the buffer added later brings one inode per 8 KiB with it.
        initial = _round_up(int(content * 1.5) + count * BLOCK_SIZE + 256 * MIB, MIB)
        env = {}
        if self.epoch:  # e2fsprogs reads 0 as "not set"
            env = {"E2FSPROGS_FAKE_TIME": str(self.epoch), "E2FSCK_TIME": str(self.epoch)}
        with open(self.output, "wb") as image:
            image.truncate(initial)
        _run(
            [
                mkfs,
                "-F",
                "-q",
                "-t",
                "ext4",
                "-b",
                str(BLOCK_SIZE),
                "-I",
                "256",
                "-i",
                str(INODE_RATIO),
                "-m",
                "0",
                "-J",
                f"size={journal_blocks(content + buffer) * BLOCK_SIZE // MIB}",
                "-L",
                "rootfs",
                "-U",
                self.uuid,
                "-E",
                f"root_owner=0:0,hash_seed={self.uuid},lazy_itable_init=0",
                "-d",
                str(self.tree.root),
                str(self.output),
            ],
            "mkfs.ext4 -d",
            env=env,
        )
        fixups = self.tree.fixups()
        if fixups:
            self._apply_fixups(debugfs, fixups, env)
        _run([e2fsck, "-f", "-y", str(self.output)], "e2fsck", env=env, ok=(0, 1))
        _run([resize2fs, "-M", str(self.output)], "resize2fs -M (shrink)", env=env)
        blocks = _block_count(_run([dumpe2fs, "-h", str(self.output)], "dumpe2fs", env=env))
        final = blocks * BLOCK_SIZE + _round_up(buffer, BLOCK_SIZE)
        with open(self.output, "r+b") as image:
            image.truncate(final)
        _run([resize2fs, str(self.output)], "resize2fs (add the free-space buffer)", env=env)
        _run([e2fsck, "-f", "-n", str(self.output)], "e2fsck (final check)", env=env)
        return self._image(content, buffer, len(fixups))

    def _apply_fixups(self, debugfs: str, fixups: list[Fixup], env: dict[str, str]) -> None:
        with tempfile.TemporaryDirectory(prefix="fledge-debugfs-") as scratch:
            lines: list[str] = []
            done: set[int] = set()
            for index, fixup in enumerate(fixups):
                lines += self._commands(fixup, Path(scratch), index, done)
            script = Path(scratch) / "script"
            script.write_text("\n".join(lines) + "\n")
            # debugfs exits 0 whatever happens; each failed command prints a line on stderr.
            done_run = subprocess.run(
                [debugfs, "-w", "-f", str(script), str(self.output)],
                capture_output=True,
                text=True,
                errors="replace",
                env={**os.environ, **env},
                check=False,
            )
        errors = [
            line
            for line in done_run.stderr.splitlines()
            if line.strip() and not line.startswith("debugfs ")
        ]
        if done_run.returncode != 0 or errors:
            raise FledgeError(
                "debugfs could not set ownership, modes or xattrs in the ext4 image:\n  "
                + "\n  ".join(errors[:12] or [f"exit status {done_run.returncode}"])
            )

    @staticmethod
    def _commands(fixup: Fixup, scratch: Path, index: int, done: set[int]) -> list[str]:
        inode = fixup.inode
        path = _debugfs_quote("/" + fixup.path)
        lines: list[str] = []
        if fixup.create:
            parent, _, name = fixup.path.rpartition("/")
            kind = stat.S_IFMT(inode.mode)
            if kind == stat.S_IFIFO:
                node = "p"
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                node = f"{'c' if kind == stat.S_IFCHR else 'b'} {inode.rdev[0]} {inode.rdev[1]}"
            else:
                raise FledgeError(f"/{fixup.path}: a {inode.kind} is missing from the staging copy")
            lines += [
                f"cd {_debugfs_quote('/' + parent)}",
                f"mknod {_debugfs_quote(name)} {node}",
                "cd /",
            ]
        elif id(inode) in done:
            return lines  # another name of an inode already fixed
        done.add(id(inode))
        if fixup.owner:
            lines += [f"sif {path} uid {inode.uid}", f"sif {path} gid {inode.gid}"]
        if fixup.mode:
            lines.append(f"sif {path} mode 0{inode.mode:o}")
        if fixup.create:
            lines += [f"sif {path} mtime {inode.mtime_ns // 1_000_000_000}"]
        for number, name in enumerate(fixup.xattrs):
            value = scratch / f"xattr-{index}-{number}"
            value.write_bytes(inode.xattrs[name])
            lines.append(f"ea_set -f {_debugfs_quote(str(value))} {path} {name}")
        return lines


def journal_blocks(final_bytes: int) -> int:
    """The journal mke2fs would give a file system of ``final_bytes`` (e2fsprogs 1.47's
    table), so the big sparse file the image starts as does not get a bigger one."""
    blocks = final_bytes // BLOCK_SIZE
    for limit, journal in (
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
    ):
        if blocks < limit:
            return journal
    return 262144


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _block_count(dumpe2fs_output: str) -> int:
    match = re.search(r"^Block count:\s+(\d+)", dumpe2fs_output, re.MULTILINE)
    if match is None:
        raise FledgeError("dumpe2fs did not report the block count of the ext4 image")
    return int(match.group(1))


# --- squashfs ------------------------------------------------------------------------------


def _pseudo_quote(path: str) -> str:
    if "\n" in path:
        raise FledgeError(f"/{path}: a file name with a line break cannot go into squashfs")
    return '"/' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Squashfs(_DiskBuilder):
    fstype = "squashfs"

    def build(self) -> DiskImage:
        mksquashfs = tool("mksquashfs")
        content, _ = self.tree.content_size()
        fixups = self.tree.fixups()
        root = self.tree.table[""]
        definitions: list[str] = []
        lost: list[str] = []
        for fixup in sorted(fixups, key=lambda f: f.path, reverse=True):  # children first
            if not fixup.path:
                continue  # the root: -root-mode/-root-uid/-root-gid
            line = self._definition(fixup)
            if line:
                definitions.append(line)
            lost += [f"/{fixup.path} ({name})" for name in fixup.xattrs]
        if lost:
            self.note(
                f"{len(lost)} extended attribute(s) could not be kept as an ordinary user "
                f"(mksquashfs takes xattrs only from the staging copy): {', '.join(lost[:5])}"
                f"{' …' if len(lost) > 5 else ''}; build as root to keep them"
            )
        level = self.config.compression_level or 15
        with tempfile.TemporaryDirectory(prefix="fledge-squashfs-") as scratch:
            args = [
                mksquashfs,
                str(self.tree.root),
                str(self.output),
                "-noappend",
                "-reproducible",
                "-no-progress",
                "-quiet",
                "-comp",
                "zstd",
                "-Xcompression-level",
                str(level),
                "-root-mode",
                f"{stat.S_IMODE(root.mode):o}",
                "-root-uid",
                str(root.uid),
                "-root-gid",
                str(root.gid),
                "-root-time",
                str(root.mtime_ns // 1_000_000_000),
            ]
            if self.epoch is not None:
                args += ["-mkfs-time", str(self.epoch)]
            if definitions:
                pseudo = Path(scratch) / "pseudo"
                pseudo.write_text("\n".join(definitions) + "\n")
                args += ["-pf", str(pseudo)]
            _run(args, "mksquashfs")
        return self._image(content, 0, len(definitions))

    @staticmethod
    def _definition(fixup: Fixup) -> str:
        inode = fixup.inode
        path = _pseudo_quote(fixup.path)
        perms = f"{stat.S_IMODE(inode.mode):o}"
        mtime = inode.mtime_ns // 1_000_000_000
        owner = f"{inode.uid} {inode.gid}"
        if fixup.create:
            kind = stat.S_IFMT(inode.mode)
            if kind == stat.S_IFIFO:
                return f"{path} I {mtime} {perms} {owner} f"
            if kind in (stat.S_IFCHR, stat.S_IFBLK):
                letter = "C" if kind == stat.S_IFCHR else "B"
                return f"{path} {letter} {mtime} {perms} {owner} {inode.rdev[0]} {inode.rdev[1]}"
            raise FledgeError(f"/{fixup.path}: a {inode.kind} is missing from the staging copy")
        # "m" (no time: the staging copy has it) works on folders holding other definitions
        # when those come first; "M" does not (squashfs-tools 4.5).
        if (fixup.owner or fixup.mode) and not stat.S_ISLNK(inode.mode):
            return f"{path} m {perms} {owner}"
        if fixup.owner:  # symlinks: mode is always 777
            return f"{path} m 777 {owner}"
        return ""


# --- xfs and btrfs -------------------------------------------------------------------------


class _Xfs(_DiskBuilder):
    """``mkfs.xfs -p``: a protofile lists every inode with its mode, owner and source file.

    Protofiles cannot express xattrs or hardlinks (hard-linked files become copies) nor names
    with spaces; each loss is noted."""

    fstype = "xfs"
    MIN_SIZE = 300 * MIB

    def build(self) -> DiskImage:
        mkfs = tool("mkfs.xfs")
        content, count = self.tree.content_size()
        buffer = buffer_bytes(self.config, content)
        size = max(self.MIN_SIZE, _round_up(int(content * 1.1) + count * 512 + buffer, MIB))
        with tempfile.TemporaryDirectory(prefix="fledge-xfs-") as scratch:
            proto = Path(scratch) / "protofile"
            proto.write_text(self._protofile())
            with open(self.output, "wb") as image:
                image.truncate(size)
            args = [mkfs, "-q", "-f", "-m", f"uuid={self.uuid}", "-L", "rootfs", "-p", str(proto)]
            _run([*args, str(self.output)], "mkfs.xfs -p")
        return self._image(content, buffer, 0)

    def _protofile(self) -> str:
        lines = ["/dev/null", "0 0"]
        lost_xattrs = 0
        seen: dict[int, str] = {}

        def spec(inode: Inode) -> str:
            kind = {
                stat.S_IFREG: "-",
                stat.S_IFDIR: "d",
                stat.S_IFLNK: "l",
                stat.S_IFCHR: "c",
                stat.S_IFBLK: "b",
                stat.S_IFIFO: "p",
            }[stat.S_IFMT(inode.mode)]
            suid = "u" if inode.mode & stat.S_ISUID else "-"
            sgid = "g" if inode.mode & stat.S_ISGID else "-"
            return f"{kind}{suid}{sgid}{inode.mode & 0o1777:03o} {inode.uid} {inode.gid}"

        def emit(rel: str, depth: int) -> None:
            nonlocal lost_xattrs
            for name in self.tree.children(rel):
                path = f"{rel}/{name}" if rel else name
                inode = self.tree.table[path]
                if any(ch.isspace() for ch in name):
                    raise FledgeError(f"/{path}: mkfs.xfs protofiles cannot hold names with spaces")
                lost_xattrs += bool(inode.xattrs)
                line = f"{'  ' * depth}{name} {spec(inode)}"
                kind = stat.S_IFMT(inode.mode)
                if kind == stat.S_IFREG:
                    seen.setdefault(id(inode), path)
                    line += f" {self.tree.root / path}"
                elif kind == stat.S_IFLNK:
                    line += f" {os.readlink(self.tree.root / path)}"
                elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                    line += f" {inode.rdev[0]} {inode.rdev[1]}"
                lines.append(line)
                if kind == stat.S_IFDIR:
                    emit(path, depth + 1)
                    lines.append(f"{'  ' * (depth + 1)}$")

        lines.append(spec(self.tree.table[""]))
        emit("", 1)
        lines.append("$")
        if lost_xattrs:
            self.note(f"xfs: {lost_xattrs} file(s) lose their xattrs (mkfs.xfs protofiles)")
        return "\n".join(lines) + "\n"


class _Btrfs(_DiskBuilder):
    """``mkfs.btrfs --rootdir --shrink``: copies the staging folder as it is, so ownership and
    device nodes are kept only when the build runs as root."""

    fstype = "btrfs"

    def build(self) -> DiskImage:
        mkfs = tool("mkfs.btrfs")
        content, count = self.tree.content_size()
        buffer = buffer_bytes(self.config, content)
        fixups = self.tree.fixups()
        if fixups:
            self.note(
                f"btrfs: {len(fixups)} path(s) keep the build user's ownership or lose device "
                "nodes/xattrs (mkfs.btrfs --rootdir copies the staging folder as it is); build "
                "as root, or use type = 'ext4'"
            )
        size = max(128 * MIB, _round_up(int(content * 1.3) + count * 1024 + buffer, MIB))
        with open(self.output, "wb") as image:
            image.truncate(size)
        args = [mkfs, "-q", "-f", "-U", self.uuid, "-L", "rootfs", "--rootdir", str(self.tree.root)]
        _run([*args, str(self.output)], "mkfs.btrfs --rootdir")
        return self._image(content, buffer, 0)
