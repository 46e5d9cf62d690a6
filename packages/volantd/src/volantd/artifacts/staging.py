"""A blob on its way into the cache: a temp file that is hashed and counted as it is written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from volantd.artifacts.errors import ArtifactTooLargeError, CacheWriteError

BLOB_MODE = 0o444
_BUFFER = 1 << 20


class StagedBlob:
    """A temp file in the cache's `tmp/` folder, removed on exit unless moved into place.

    Use it as a context manager: leaving the block by any exception (cancellation included)
    or without `move_to` deletes the temp file, so no failure leaves a partial file behind.
    """

    def __init__(self, tmp_dir: Path, *, source: str, max_bytes: int) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._moved = False
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="fetch-", suffix=".partial", dir=tmp_dir)
        except OSError as exc:
            raise self._write_error(tmp_dir, exc) from exc
        self.path = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=_BUFFER)

    def __enter__(self) -> StagedBlob:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()

    def write(self, chunk: bytes) -> None:
        """Append `chunk`, refusing to grow past `max_bytes`."""
        if self._file is None:
            raise RuntimeError("write to a finished StagedBlob")
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ArtifactTooLargeError(self.source, limit=self.max_bytes)
        self._hash.update(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise self._write_error(self.path, exc) from exc

    def finish(self) -> str:
        """Flush the bytes to disk, make the file read-only and return its hex sha256."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                with file:
                    file.flush()
                    os.fchmod(file.fileno(), BLOB_MODE)
                    os.fsync(file.fileno())
            except OSError as exc:
                raise self._write_error(self.path, exc) from exc
        return self._hash.hexdigest()

    def move_to(self, target: Path) -> None:
        """Rename the finished file to `target` atomically, unless a blob is already there."""
        self.finish()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if _holds_blob(target, self.size):
                return  # Another fetch of the same digest got there first; discard this copy.
            os.replace(self.path, target)
            self._moved = True
            _fsync_dir(target.parent)
        except OSError as exc:
            raise self._write_error(target, exc) from exc
        finally:
            self.discard()

    def discard(self) -> None:
        """Close and delete the temp file (nothing happens once it was moved into place)."""
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()
        if not self._moved:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _write_error(self, path: Path, exc: OSError) -> CacheWriteError:
        return CacheWriteError(
            f"could not store artifact {self.source} in the cache: {path}: "
            f"{exc.strerror or exc}; check the free space and permissions there",
            source=self.source,
        )


def _holds_blob(path: Path, size: int) -> bool:
    try:
        existing = path.stat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(existing.st_mode) and existing.st_size == size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
