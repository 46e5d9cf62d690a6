"""``fledge inspect`` for root disks: list an ext4 image (``debugfs``) or a squashfs image
(``unsquashfs -lln``) without mounting it, in the same columns as for an initramfs."""

from __future__ import annotations

import posixpath
import re
import stat
import subprocess
from pathlib import Path

from ..errors import FledgeError
from .disk import tool

_EXT_MAGIC_OFFSET = 1080
_SQUASHFS_MAGIC = b"hsqs"
_UNSQUASHFS_LINE = re.compile(
    r"(?P<mode>\S{10})\s+(?P<uid>\d+)/(?P<gid>\d+)\s+(?P<size>\d+|\d+,\s*\d+)\s+"
    r"\S+\s+\S+\s+(?P<path>.*)"
)


def disk_kind(path: Path) -> str | None:
    """``ext4`` (any ext2/3/4 superblock), ``squashfs``, or None."""
    try:
        with open(path, "rb") as image:
            head = image.read(_EXT_MAGIC_OFFSET + 2)
    except OSError:
        return None
    if head.startswith(_SQUASHFS_MAGIC):
        return "squashfs"
    if head[_EXT_MAGIC_OFFSET : _EXT_MAGIC_OFFSET + 2] == b"\x53\xef":
        return "ext4"
    return None


def is_disk_image(path: Path) -> bool:
    return disk_kind(path) is not None


def list_disk_image(path: Path) -> list[str]:
    """One line per path: mode, uid/gid, size (or major,minor), path (-> target)."""
    kind = disk_kind(path)
    if kind == "squashfs":
        return _list_squashfs(path)
    if kind == "ext4":
        return _list_ext4(path)
    raise FledgeError(f"{path}: not an ext4 or squashfs image")


def _list_squashfs(path: Path) -> list[str]:
    done = subprocess.run(
        [tool("unsquashfs"), "-lln", "-d", "", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if done.returncode != 0:
        raise FledgeError(f"{path}: unsquashfs failed: {done.stderr.strip()}")
    lines = []
    for line in done.stdout.splitlines():
        match = _UNSQUASHFS_LINE.fullmatch(line.strip())
        if match is None:
            continue
        size = match["size"].replace(" ", "")
        name = "/" + match["path"].lstrip("/")
        lines.append(f"{match['mode']} {match['uid']}/{match['gid']} {size:>10} {name}")
    return lines


def _list_ext4(path: Path) -> list[str]:
    debugfs = tool("debugfs")
    found: list[tuple[str, str]] = []
    level = ["/"]
    while level:
        script = "\n".join(f'ls -p "{folder.replace(chr(34), chr(34) * 2)}"' for folder in level)
        done = subprocess.run(
            [debugfs, "-f", "-", str(path)],
            input=script + "\n",
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
        if done.returncode != 0:
            raise FledgeError(f"{path}: debugfs failed: {done.stderr.strip()}")
        folder = "/"
        following: list[str] = []
        for line in done.stdout.splitlines():
            if line.startswith("debugfs: ls -p "):
                folder = line[len("debugfs: ls -p ") :].strip().strip('"').replace('""', '"')
                continue
            fields = line.split("/")
            if len(fields) < 7 or fields[0] != "":
                continue
            mode, uid, gid = int(fields[2], 8), fields[3], fields[4]
            name, size = "/".join(fields[5:-2]), fields[-2]
            if name in (".", "..") or (folder == "/" and name == "lost+found"):
                continue
            full = posixpath.join(folder, name)
            found.append((full, f"{stat.filemode(mode)} {uid}/{gid} {size:>10} {full}"))
            if stat.S_ISDIR(mode):
                following.append(full)
        level = following
    return [line for _, line in sorted(found)]
