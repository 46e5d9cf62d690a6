"""The content-addressed artifact cache that plugin installs fill.

A plugin manifest names its artifacts (an initramfs, a rootfs image, disks) by URL or path
together with a `sha256:<hex>` checksum. `ArtifactCache.fetch` downloads or copies each one,
hashing the bytes as they stream, and keeps it only if the digest matches.

Layout under the cache root (by default `VOLANT_CACHE_DIR`, else `VOLANT_HOME/cache`):

    sha256/<hex>      one read-only (0444) blob per digest; its name is the sha256 of its bytes
    tmp/fetch-*.partial
                      a fetch in progress; renamed to `sha256/<hex>` once complete and verified

A blob only ever appears under its digest by an atomic rename of a complete, fsynced file,
so a crash leaves at most a stray file in `tmp/`, never a partial blob. Two fetches of the
same digest may run at once: the first rename wins and the other copy is discarded.
"""

from volantd.artifacts.cache import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT_S,
    ArtifactCache,
    CachedArtifact,
)
from volantd.artifacts.checksum import parse_checksum, sha256_file
from volantd.artifacts.errors import (
    ArtifactConnectionError,
    ArtifactError,
    ArtifactHTTPError,
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactReadError,
    ArtifactTimeoutError,
    ArtifactTooLargeError,
    CacheWriteError,
    ChecksumMismatchError,
    EmptyArtifactError,
    InvalidChecksumError,
    InvalidSourceError,
    NotARegularFileError,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT_S",
    "ArtifactCache",
    "ArtifactConnectionError",
    "ArtifactError",
    "ArtifactHTTPError",
    "ArtifactNotFoundError",
    "ArtifactPermissionError",
    "ArtifactReadError",
    "ArtifactTimeoutError",
    "ArtifactTooLargeError",
    "CacheWriteError",
    "CachedArtifact",
    "ChecksumMismatchError",
    "EmptyArtifactError",
    "InvalidChecksumError",
    "InvalidSourceError",
    "NotARegularFileError",
    "parse_checksum",
    "sha256_file",
]
