"""The content-addressed artifact cache: `root/sha256/<hex>` blobs, staged in `root/tmp/`."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from volantd.artifacts.checksum import parse_checksum
from volantd.artifacts.download import download
from volantd.artifacts.errors import ChecksumMismatchError, EmptyArtifactError
from volantd.artifacts.local import copy_file
from volantd.artifacts.sources import HttpSource, parse_source
from volantd.artifacts.staging import StagedBlob
from volantd.paths import cache_dir

DEFAULT_MAX_BYTES = 8 * 1024**3
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class CachedArtifact:
    """A verified blob in the cache: its hex sha256, where it lies, its size, its source."""

    digest: str
    path: Path
    size: int
    source: str

    @property
    def checksum(self) -> str:
        """The digest as manifests write it: `sha256:<hex>`."""
        return f"sha256:{self.digest}"


class ArtifactCache:
    """Blobs named by their sha256 under `root`, fetched from URLs or copied from files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_environment(cls) -> ArtifactCache:
        """The host's cache: `VOLANT_CACHE_DIR`, else `VOLANT_HOME/cache`."""
        return cls(cache_dir())

    @property
    def blobs_dir(self) -> Path:
        return self.root / "sha256"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path_for(self, digest: str) -> Path:
        """Where the blob for `digest` (hex or `sha256:<hex>`) lies, whether or not it exists."""
        return self.blobs_dir / parse_checksum(digest)

    def has(self, digest: str) -> bool:
        """Whether the blob for `digest` exists as a non-empty regular file."""
        return self._stat_blob(parse_checksum(digest)) is not None

    def remove(self, digest: str) -> bool:
        """Delete the blob for `digest`; False if there was none."""
        try:
            self.path_for(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    async def fetch(
        self,
        source: str,
        expected: str | None,
        *,
        base_dir: Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> CachedArtifact:
        """The blob for `source`, downloaded or copied into the cache and verified.

        `source` is an http(s) URL, a file:// URL or a path (a relative one resolves against
        `base_dir`). With `expected` (`sha256:<hex>` or `<hex>`) an already cached blob is
        returned without touching the source, and a different digest raises
        ChecksumMismatchError; with None the computed digest is returned as is (whether that
        is acceptable is the caller's decision). More than `max_bytes` bytes is refused;
        `timeout_s` bounds an HTTP download. Nothing is left in the cache when the fetch
        fails or is cancelled.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        wanted = parse_checksum(expected) if expected is not None else None
        origin = parse_source(source, base_dir)
        if wanted is not None and (size := self._stat_blob(wanted)) is not None:
            return CachedArtifact(wanted, self.blobs_dir / wanted, size, source)
        name = origin.url if isinstance(origin, HttpSource) else str(origin.path)
        with StagedBlob(self.tmp_dir, source=name, max_bytes=max_bytes) as blob:
            if isinstance(origin, HttpSource):
                await download(origin, blob, timeout_s=timeout_s)
            else:
                await copy_file(origin.path, blob)
            digest = blob.finish()
            if blob.size == 0:
                raise EmptyArtifactError(name)
            if wanted is not None and digest != wanted:
                raise ChecksumMismatchError(name, expected=wanted, actual=digest)
            target = self.blobs_dir / digest
            blob.move_to(target)
            return CachedArtifact(digest, target, blob.size, source)

    def _stat_blob(self, digest: str) -> int | None:
        try:
            info = (self.blobs_dir / digest).stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return None
        return info.st_size
