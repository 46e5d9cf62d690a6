"""Where an artifact comes from: an http(s) URL, a file:// URL or a filesystem path."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from volantd.artifacts.errors import InvalidSourceError

_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_FILE_URL = re.compile(r"file:", re.IGNORECASE)
_ACCEPTED = "an http:// or https:// URL, a file:// URL or a filesystem path"


@dataclass(frozen=True)
class HttpSource:
    """An http:// or https:// URL, downloaded with httpx."""

    url: str
    host: str


@dataclass(frozen=True)
class LocalSource:
    """A file on this host, named by path or file:// URL; `path` is absolute and resolved."""

    path: Path


ArtifactSource = HttpSource | LocalSource


def parse_source(source: str, base_dir: Path | None = None) -> ArtifactSource:
    """Classify `source`; a relative path is resolved against `base_dir` (required then)."""
    if not source.strip():
        raise InvalidSourceError(f"artifact source is empty; give {_ACCEPTED}", source=source)
    if "\0" in source:
        raise InvalidSourceError(
            f"artifact source {source!r} contains a NUL character", source=source
        )
    if match := _URL_SCHEME.match(source):
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            return _http_source(source)
        if scheme != "file":
            raise InvalidSourceError(
                f"artifact source {source} uses the unsupported scheme {scheme}://; "
                f"give {_ACCEPTED}",
                source=source,
            )
    if _FILE_URL.match(source):
        return LocalSource(_file_url_path(source))
    return LocalSource(_resolve_path(source, Path(source), base_dir))


def _http_source(source: str) -> HttpSource:
    try:
        host = httpx.URL(source).host
    except httpx.InvalidURL as exc:
        raise InvalidSourceError(
            f"artifact URL {source} is not valid: {exc}", source=source
        ) from exc
    if not host:
        raise InvalidSourceError(f"artifact URL {source} names no host", source=source)
    return HttpSource(url=source, host=host)


def _file_url_path(source: str) -> Path:
    parts = urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise InvalidSourceError(
            f"artifact URL {source} names the host {parts.netloc!r}; a file:// URL can only "
            "name a file on this host (file:///absolute/path)",
            source=source,
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidSourceError(
            f"artifact URL {source} holds no absolute path; write file:///absolute/path",
            source=source,
        )
    return Path(os.path.realpath(path))


def _resolve_path(source: str, path: Path, base_dir: Path | None) -> Path:
    if not path.is_absolute():
        if base_dir is None:
            raise InvalidSourceError(
                f"artifact path {source} is relative and there is no folder to resolve it "
                "against; give an absolute path",
                source=source,
            )
        path = base_dir / path
    return Path(os.path.realpath(path))
