"""Copying files into and out of the guest (``PUT``/``GET /v1/files?path=``).

Uploads stream into a temporary file next to the target, which is then renamed over it, so
readers never see half a file; parent directories are created. Downloads stream too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, BinaryIO, NamedTuple

from .errors import KestrelError

DEFAULT_MODE = 0o644
CHUNK_SIZE = 256 * 1024


class FileRequestError(KestrelError):
    """A path or mode that cannot be used (HTTP 400)."""


class FileMissingError(KestrelError):
    """Nothing exists at the path (HTTP 404)."""


class FileDeniedError(KestrelError):
    """The agent may not read or write there (HTTP 403)."""


def check_path(path: str | None) -> str:
    """The ``path`` query parameter: required, absolute, no NUL, not the root."""
    if not path:
        raise FileRequestError("query parameter 'path' is required (an absolute guest path)")
    if not path.startswith("/") or "\x00" in path:
        raise FileRequestError(f"path must be absolute (got {path!r})")
    normal = os.path.normpath(path)
    if normal == "/":
        raise FileRequestError("path / is a directory")
    return normal


def parse_mode(value: str | None) -> int:
    """An octal mode like ``0644``, ``644`` or ``0o755``; default 0644."""
    if value is None or value == "":
        return DEFAULT_MODE
    text = value.lower().removeprefix("0o")
    try:
        mode = int(text, 8)
    except ValueError:
        raise FileRequestError(f"mode must be octal like 0644 (got {value!r})") from None
    if not 0 <= mode <= 0o7777:
        raise FileRequestError(f"mode must be at most 07777 (got {value!r})")
    return mode


async def receive_file(path: str, mode: int, chunks: AsyncIterable[bytes]) -> dict[str, Any]:
    """Write ``chunks`` to ``path`` atomically with ``mode``; what was written."""
    directory, name = os.path.split(path)
    if os.path.isdir(path):
        raise FileRequestError(f"{path} is a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FileRequestError(f"{directory} exists and is not a directory") from None
    except PermissionError:
        raise FileDeniedError(f"cannot create directory {directory}: permission denied") from None
    temporary = os.path.join(directory, f".{name}.kestrel-upload-{os.getpid()}-{id(chunks)}")
    existed = os.path.exists(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except PermissionError:
        raise FileDeniedError(f"cannot write in {directory}: permission denied") from None
    except OSError as error:
        raise FileRequestError(f"cannot write {path}: {error.strerror or error}") from None
    size = 0
    try:
        with open(fd, "wb", closefd=True) as file:
            async for chunk in chunks:
                file.write(chunk)
                size += len(chunk)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return {"path": path, "size": size, "mode": f"{mode:04o}", "created": not existed}


class Download(NamedTuple):
    """An open file to send: its size (None: unknown, e.g. /proc) and mode."""

    file: BinaryIO
    size: int | None
    mode: int


def open_download(path: str) -> Download:
    """Open ``path`` for reading: a regular file (404 when missing, 400 for a directory)."""
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by file_chunks
    except FileNotFoundError:
        raise FileMissingError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise FileRequestError(f"{path} is a directory") from None
    except PermissionError:
        raise FileDeniedError(f"cannot read {path}: permission denied") from None
    except OSError as error:
        raise FileRequestError(f"cannot read {path}: {error.strerror or error}") from None
    info = os.fstat(file.fileno())
    if stat.S_ISDIR(info.st_mode):
        file.close()
        raise FileRequestError(f"{path} is a directory")
    if not stat.S_ISREG(info.st_mode):
        file.close()
        raise FileRequestError(f"{path} is not a regular file")
    size = info.st_size or None  # /proc and /sys files report 0 but have content
    return Download(file, size, stat.S_IMODE(info.st_mode))


async def file_chunks(file: BinaryIO) -> AsyncIterator[bytes]:
    """The file's content in chunks; the file is closed at the end (or when abandoned)."""
    try:
        while chunk := file.read(CHUNK_SIZE):
            yield chunk
    finally:
        file.close()
