"""Local artifacts: a regular file on this host, copied into a StagedBlob and hashed."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from volantd.artifacts.errors import (
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactReadError,
    ArtifactTooLargeError,
    NotARegularFileError,
)
from volantd.artifacts.staging import StagedBlob

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_MISSING = (errno.ENOENT, errno.ENOTDIR)


async def copy_file(path: Path, blob: StagedBlob) -> None:
    """Copy the regular file at `path` into `blob`; reads run in a worker thread.

    The file's name says nothing about its content: every byte is hashed on the way in.
    """
    with _open_regular(path, blob.source, blob.max_bytes) as file:
        while True:
            try:
                chunk = await asyncio.to_thread(file.read, _CHUNK)
            except OSError as exc:
                raise _read_error(path, blob.source, exc) from exc
            if not chunk:
                return
            blob.write(chunk)


def _open_regular(path: Path, source: str, limit: int) -> BinaryIO:
    """Open `path` for reading, refusing anything but a regular file of at most `limit` bytes.

    O_NONBLOCK keeps a fifo from blocking the open; the type is checked on the opened file,
    so it cannot change between the check and the read.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _read_error(path, source, exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(source, path=str(path), kind=_kind(info.st_mode))
        if info.st_size > limit:
            raise ArtifactTooLargeError(source, limit=limit, size=info.st_size)
        os.set_blocking(fd, True)
        # Buffered, so that closing waits for a read still running in the worker thread.
        return os.fdopen(fd, "rb", buffering=_CHUNK)
    except BaseException:
        os.close(fd)
        raise


def _read_error(path: Path, source: str, exc: OSError) -> Exception:
    if exc.errno in _MISSING:
        return ArtifactNotFoundError(
            f"artifact {path} does not exist; check the path in the manifest",
            source=source,
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ArtifactPermissionError(source, path=str(path))
    if exc.errno == errno.ENXIO:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if mode and not stat.S_ISREG(mode):
            return NotARegularFileError(source, path=str(path), kind=_kind(mode))
    return ArtifactReadError(f"cannot read artifact {path}: {exc.strerror or exc}", source=source)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"
