"""Errors raised while resolving, fetching or verifying an artifact.

Every error carries the `source` it is about (the URL or path the manifest named) and says
what happened to it, so that a plugin install can report it to the operator as is.
"""

from __future__ import annotations

from volantd.errors import VolantError


def format_size(size: int) -> str:
    """`size` bytes for a person: `8 GiB`, `1.5 MiB`, `512 bytes`."""
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _exact_size(size: int) -> str:
    readable = format_size(size)
    return readable if size < 1024 else f"{readable} ({size} bytes)"


class ArtifactError(VolantError):
    """Base of every artifact error; `source` is the URL or path it is about ("" if none)."""

    def __init__(self, message: str, *, source: str = "") -> None:
        self.source = source
        super().__init__(message)


class InvalidChecksumError(ArtifactError):
    """A checksum is neither `sha256:<64 hex digits>` nor 64 hex digits alone."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        super().__init__(
            f"invalid checksum {value!r}: {reason}; write it as 'sha256:' followed by "
            "64 hex digits (or the 64 hex digits alone)"
        )


class InvalidSourceError(ArtifactError):
    """A source is not an http(s) URL, a file:// URL or a usable filesystem path."""


class ChecksumMismatchError(ArtifactError):
    """The fetched bytes do not hash to the digest the manifest gives."""

    def __init__(self, source: str, *, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"artifact {source} has sha256:{actual}, but the manifest says sha256:{expected}; "
            "the artifact changed or the manifest is wrong: fix the checksum or the source",
            source=source,
        )


class ArtifactNotFoundError(ArtifactError):
    """The server answered 404/410, or the file does not exist; `status` is None for files."""

    def __init__(self, message: str, *, source: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, source=source)


class ArtifactHTTPError(ArtifactError):
    """The server answered with an error status, or the HTTP exchange itself failed."""

    def __init__(self, message: str, *, source: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, source=source)


class ArtifactTimeoutError(ArtifactError):
    """Connecting or downloading took longer than `timeout_s`."""

    def __init__(self, source: str, *, timeout_s: float, phase: str) -> None:
        self.timeout_s = timeout_s
        super().__init__(
            f"gave up {phase} {source} after {timeout_s:g} s; check that the server is "
            "reachable and fast enough, or allow a longer timeout",
            source=source,
        )


class ArtifactConnectionError(ArtifactError):
    """The server could not be reached, or the connection broke during the download."""

    def __init__(self, message: str, *, source: str, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(message, source=source)


class ArtifactTooLargeError(ArtifactError):
    """The artifact is larger than the size limit; `size` is its size when known up front."""

    def __init__(self, source: str, *, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        seen = f"it is {_exact_size(size)}" if size is not None else "more bytes than that arrived"
        super().__init__(
            f"artifact {source} is larger than the limit of {_exact_size(limit)}: {seen}; "
            "nothing was stored",
            source=source,
        )


class EmptyArtifactError(ArtifactError):
    """The artifact has no bytes at all (an empty file, or an empty HTTP body)."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"artifact {source} is empty (0 bytes); an initramfs, image or disk cannot be",
            source=source,
        )


class NotARegularFileError(ArtifactError):
    """A local source is a directory, device, fifo or socket instead of a regular file."""

    def __init__(self, source: str, *, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        super().__init__(
            f"artifact {path} is a {kind}, not a regular file; name the file itself",
            source=source,
        )


class ArtifactPermissionError(ArtifactError):
    """A local source exists but volantd may not read it."""

    def __init__(self, source: str, *, path: str) -> None:
        self.path = path
        super().__init__(
            f"permission denied reading artifact {path}; make it readable by the user "
            "volantd runs as",
            source=source,
        )


class ArtifactReadError(ArtifactError):
    """A local source could not be read for another reason (I/O error, symlink loop, …)."""


class CacheWriteError(ArtifactError):
    """The cache itself could not be written (disk full, read-only file system, …)."""
