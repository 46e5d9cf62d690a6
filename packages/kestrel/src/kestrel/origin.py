"""Where an ``http://`` URL points, parsed without the HTTP stack (usable at early boot)."""

from __future__ import annotations

from typing import NamedTuple


class Origin(NamedTuple):
    """Where an ``http://`` URL points: host, port and the base path."""

    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.authority}{self.path}"


def parse_http_url(url: str) -> Origin:
    """Split an ``http://host[:port]/path`` URL; ValueError for anything else."""
    from urllib.parse import urlsplit  # not at boot: it costs ~35 ms under emulation

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Origin(parts.hostname, parts.port or 80, path)
