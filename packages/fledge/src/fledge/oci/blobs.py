"""The content-addressed blob cache shared by every build: ``<cache>/oci/blobs/sha256/<hex>``.

A blob only ever appears under its final name after its sha256 and size were checked while
it streamed in. Downloads go to ``<hex>.partial`` next to it, resume from there with an HTTP
Range request, and a per-blob ``flock`` keeps concurrent builds from writing the same file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import FledgeError
from .reference import DIGEST

CHUNK = 1 << 20
ATTEMPTS = 3
RETRY_DELAY_S = 0.25

ByteProgress = Callable[[int, int | None], None]
"""Called with (bytes so far, expected total) while a blob streams in."""


@dataclass
class BlobStream:
    """An open download: the byte offset the data starts at, and the data."""

    offset: int
    chunks: Iterator[bytes]


BlobOpener = Callable[[int], AbstractContextManager[BlobStream]]
"""Opens a blob download starting at the given offset (a Range request when > 0); the
stream's ``offset`` says where the server actually started (0 when it ignored the range)."""


class TransferInterrupted(Exception):
    """A download broke off in a way worth retrying (connection reset, timeout)."""


class _StartOver(Exception):
    pass


def _hex(digest: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise FledgeError(f"blob digest {digest!r} is not sha256:<64 hex digits>")
    return digest.removeprefix("sha256:")


def _mismatch(what: str, digest: str, got: str, *, size: int | None, actual: int) -> FledgeError:
    sizes = f" ({actual} bytes, expected {size})" if size is not None and size != actual else ""
    return FledgeError(
        f"{what}: blob {digest} failed verification{sizes}\n  expected: {digest}\n"
        f"  got:      sha256:{got}\nthe bad copy was deleted; the source serves different "
        "content than the image's manifest names, so try again or fix the image"
    )


class BlobCache:
    """Verified blobs by digest under ``<cache_dir>/oci/blobs/sha256``."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "oci" / "blobs" / "sha256"
        self.locks = cache_dir / "oci" / "locks"

    def path(self, digest: str) -> Path:
        """Where the blob lives once verified (whether or not it is there yet)."""
        return self.root / _hex(digest)

    def partial_path(self, digest: str) -> Path:
        """Where an unfinished download of the blob is kept for resuming."""
        return self.root / f"{_hex(digest)}.partial"

    def get(self, digest: str, size: int | None = None) -> Path | None:
        """The cached blob after re-checking its size and sha256; a blob that fails is
        deleted (so it gets fetched again) and None returned."""
        path = self.path(digest)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return None
        if (size is None or actual == size) and _sha256_file(path) == _hex(digest):
            return path
        path.unlink(missing_ok=True)
        return None

    @contextmanager
    def lock(self, digest: str) -> Iterator[None]:
        """Hold the blob's lock (``flock`` on ``oci/locks/<hex>.lock``) across processes
        and threads."""
        self.locks.mkdir(parents=True, exist_ok=True)
        with (self.locks / f"{_hex(digest)}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def put_bytes(self, data: bytes, *, what: str, digest: str | None = None) -> Path:
        """Store small content (a manifest) under its digest, checking ``digest`` if given."""
        got = hashlib.sha256(data).hexdigest()
        if digest is not None and got != _hex(digest):
            raise _mismatch(what, digest, got, size=None, actual=len(data))
        final = self.root / got
        if final.is_file() and final.stat().st_size == len(data):
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.root, prefix=".ingest-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(name, 0o644)
        os.replace(name, final)
        return final

    def ingest(
        self,
        source: IO[bytes],
        *,
        what: str,
        digest: str | None = None,
        size: int | None = None,
        progress: ByteProgress | None = None,
    ) -> tuple[str, Path]:
        """Copy a local stream into the cache, verifying ``digest`` and ``size`` when given;
        returns the content's digest and cache path. Reuses a verified copy already there."""
        if digest is not None:
            found = self.get(digest, size)
            if found is not None:
                return digest, found
        self.root.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.root, prefix=".ingest-")
        partial = Path(name)
        try:
            hasher, written = hashlib.sha256(), 0
            with os.fdopen(handle, "wb") as out:
                for block in iter(lambda: source.read(CHUNK), b""):
                    written += len(block)
                    if size is not None and written > size:
                        break
                    hasher.update(block)
                    out.write(block)
                    if progress:
                        progress(written, size)
            got = hasher.hexdigest()
            if digest is not None and (
                got != _hex(digest) or (size is not None and written != size)
            ):
                raise _mismatch(what, digest, got, size=size, actual=written)
            final = self.root / got
            os.chmod(partial, 0o644)
            os.replace(partial, final)
            return f"sha256:{got}", final
        finally:
            partial.unlink(missing_ok=True)

    def download(
        self,
        digest: str,
        size: int | None,
        opener: BlobOpener,
        *,
        what: str,
        progress: ByteProgress | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> Path:
        """Fetch a blob into the cache unless a verified copy is there, resuming a partial
        download with a Range request; ``what`` names the blob and its source in errors.

        A digest mismatch deletes the partial file; when the bad bytes came from an earlier
        partial download, the blob is fetched once more from the start before giving up.
        """
        with self.lock(digest):
            found = self.get(digest, size)
            if found is not None:
                return found
            self.root.mkdir(parents=True, exist_ok=True)
            failure = ""
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return self._transfer(digest, size, opener, what=what, progress=progress)
                except _StartOver as restart:
                    self.partial_path(digest).unlink(missing_ok=True)
                    if on_restart:
                        on_restart(str(restart))
                    failure = str(restart)
                except TransferInterrupted as interrupted:
                    failure = str(interrupted)
                    if attempt < ATTEMPTS:
                        time.sleep(RETRY_DELAY_S * attempt)
            raise FledgeError(
                f"{what}: download of blob {digest} kept failing: {failure}; run the build "
                "again to resume it"
            )

    def _transfer(
        self,
        digest: str,
        size: int | None,
        opener: BlobOpener,
        *,
        what: str,
        progress: ByteProgress | None,
    ) -> Path:
        want = _hex(digest)
        partial = self.partial_path(digest)
        offset = partial.stat().st_size if partial.exists() else 0
        if size is not None and offset > size:
            partial.unlink()
            offset = 0
        hasher = hashlib.sha256()
        if offset:
            _hash_into(hasher, partial)
        resumed = offset > 0
        if size is None or offset < size:
            with opener(offset) as stream:
                if stream.offset != offset:
                    offset, resumed, hasher = 0, False, hashlib.sha256()
                written = offset
                with partial.open("r+b" if offset else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    for chunk in stream.chunks:
                        written += len(chunk)
                        if size is not None and written > size:
                            break
                        hasher.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(written, size)
                    out.flush()
                    os.fsync(out.fileno())
        else:
            written = offset
        got = hasher.hexdigest()
        if got != want or (size is not None and written != size):
            partial.unlink(missing_ok=True)
            if resumed:
                raise _StartOver(
                    f"the partial download of {digest} did not verify; fetching it again "
                    "from the start"
                )
            raise _mismatch(what, digest, got, size=size, actual=written)
        final = self.path(digest)
        os.replace(partial, final)
        with suppress(OSError):
            os.chmod(final, 0o644)
        return final


def _hash_into(hasher: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(block)


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    _hash_into(hasher, path)
    return hasher.hexdigest()
