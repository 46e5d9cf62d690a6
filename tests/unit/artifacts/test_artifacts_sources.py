"""parse_source: which sources are URLs, which are paths, and how paths resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from volantd.artifacts import InvalidSourceError
from volantd.artifacts.sources import HttpSource, LocalSource, parse_source


@pytest.mark.parametrize(
    ("source", "host"),
    [
        ("http://example.com/rootfs.img", "example.com"),
        ("https://127.0.0.1:8443/a/b.cpio", "127.0.0.1"),
        ("HTTPS://Example.com/x", "example.com"),
    ],
)
def test_http_and_https_urls_are_downloads(source: str, host: str) -> None:
    assert parse_source(source) == HttpSource(url=source, host=host)


def test_absolute_path_ignores_base_dir(tmp_path: Path) -> None:
    assert parse_source(str(tmp_path / "a.img"), Path("/elsewhere")) == LocalSource(
        tmp_path.resolve() / "a.img"
    )


def test_relative_path_resolves_against_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "plugin"
    assert parse_source("images/../rootfs.img", base) == LocalSource(
        tmp_path.resolve() / "plugin" / "rootfs.img"
    )


def test_relative_path_without_base_dir_is_an_error() -> None:
    with pytest.raises(InvalidSourceError, match=r"artifact path rootfs\.img is relative"):
        parse_source("rootfs.img")


def test_symlinks_are_resolved(tmp_path: Path) -> None:
    (tmp_path / "real.img").write_bytes(b"x")
    (tmp_path / "link.img").symlink_to("real.img")
    assert parse_source("link.img", tmp_path) == LocalSource(tmp_path.resolve() / "real.img")


@pytest.mark.parametrize(
    "url",
    ["file:///srv/plugins/rootfs%20v1.img", "file://localhost/srv/plugins/rootfs%20v1.img"],
)
def test_file_urls_name_local_paths(url: str) -> None:
    assert parse_source(url) == LocalSource(Path("/srv/plugins/rootfs v1.img"))


def test_file_url_on_another_host_is_an_error() -> None:
    with pytest.raises(InvalidSourceError, match="names the host 'server'"):
        parse_source("file://server/share/rootfs.img")


@pytest.mark.parametrize("source", ["ftp://example.com/rootfs.img", "s3://bucket/rootfs.img"])
def test_other_schemes_are_errors_listing_the_accepted_sources(source: str) -> None:
    scheme = source.split(":", 1)[0]
    with pytest.raises(InvalidSourceError) as caught:
        parse_source(source, Path("/base"))
    message = str(caught.value)
    assert f"{source} uses the unsupported scheme {scheme}://" in message
    assert "an http:// or https:// URL, a file:// URL or a filesystem path" in message
    assert caught.value.source == source


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "artifact source is empty"),
        ("http:///rootfs.img", "names no host"),
        ("https://[::1/rootfs.img", "is not valid"),
        ("file:rootfs.img", "holds no absolute path"),
    ],
)
def test_malformed_sources_are_errors(source: str, message: str) -> None:
    with pytest.raises(InvalidSourceError, match=message):
        parse_source(source, Path("/base"))
