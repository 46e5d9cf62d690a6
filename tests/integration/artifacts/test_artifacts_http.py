"""ArtifactCache over HTTP, against a real server on 127.0.0.1 that records every request."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from artifact_server import HUGE, ArtifactServer

from volantd.artifacts import (
    ArtifactCache,
    ArtifactConnectionError,
    ArtifactHTTPError,
    ArtifactNotFoundError,
    ArtifactTimeoutError,
    ArtifactTooLargeError,
    CachedArtifact,
    ChecksumMismatchError,
    EmptyArtifactError,
    InvalidChecksumError,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
CONTENT = os.urandom(256 * 1024)
DIGEST = hashlib.sha256(CONTENT).hexdigest()
OTHER = hashlib.sha256(b"the manifest expects something else").hexdigest()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def leftovers(cache: ArtifactCache) -> list[str]:
    """Every file under the cache root (blobs and temp files), relative to it."""
    return sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*") if p.is_file())


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


@pytest.fixture
def url(server: ArtifactServer) -> str:
    return server.publish("initramfs.cpio", CONTENT)


def test_download_is_verified_and_stored_read_only(
    cache: ArtifactCache, server: ArtifactServer, url: str
) -> None:
    artifact = run(cache.fetch(url, f"sha256:{DIGEST}"))
    assert artifact == CachedArtifact(DIGEST, cache.root / "sha256" / DIGEST, len(CONTENT), url)
    assert artifact.path.read_bytes() == CONTENT
    assert stat.S_IMODE(artifact.path.stat().st_mode) == 0o444
    assert server.requests == ["/files/initramfs.cpio"]
    assert leftovers(cache) == [f"sha256/{DIGEST}"]


def test_cache_hit_skips_the_network(
    cache: ArtifactCache, server: ArtifactServer, url: str
) -> None:
    first = run(cache.fetch(url, DIGEST))
    again = run(cache.fetch(url, f"SHA256:{DIGEST.upper()}"))
    elsewhere = run(cache.fetch(server.url("status/404"), DIGEST))
    assert first.path == again.path == elsewhere.path
    assert elsewhere.source == server.url("status/404")
    assert server.requests == ["/files/initramfs.cpio"]


def test_without_expected_digest_the_download_names_itself(
    cache: ArtifactCache, server: ArtifactServer, url: str
) -> None:
    assert run(cache.fetch(url, None)).digest == DIGEST
    assert run(cache.fetch(url, None)).digest == DIGEST
    assert len(server.requests) == 2  # with nothing to compare against, nothing is a hit


def test_redirects_are_followed(cache: ArtifactCache, server: ArtifactServer, url: str) -> None:
    artifact = run(cache.fetch(server.url("redirect/initramfs.cpio"), DIGEST))
    assert artifact.path.read_bytes() == CONTENT
    assert server.requests == ["/redirect/initramfs.cpio", "/files/initramfs.cpio"]


def test_body_without_content_length(cache: ArtifactCache, server: ArtifactServer) -> None:
    artifact = run(cache.fetch(server.url("stream/100000"), None))
    assert artifact.size == 100000
    assert artifact.digest == hashlib.sha256(b"y" * 100000).hexdigest()


def test_mismatch_names_both_digests_and_the_url_and_leaves_nothing(
    cache: ArtifactCache, url: str
) -> None:
    with pytest.raises(ChecksumMismatchError) as caught:
        run(cache.fetch(url, f"sha256:{OTHER}"))
    assert str(caught.value).startswith(
        f"artifact {url} has sha256:{DIGEST}, but the manifest says sha256:{OTHER}"
    )
    assert (caught.value.actual, caught.value.expected, caught.value.source) == (DIGEST, OTHER, url)
    assert leftovers(cache) == []
    assert not cache.has(DIGEST)


@pytest.mark.parametrize(("status", "phrase"), [(404, "Not Found"), (410, "Gone")])
def test_missing_artifact_names_the_url_and_the_status(
    cache: ArtifactCache, server: ArtifactServer, status: int, phrase: str
) -> None:
    missing = server.url(f"status/{status}")
    with pytest.raises(ArtifactNotFoundError) as caught:
        run(cache.fetch(missing, DIGEST))
    assert str(caught.value).startswith(
        f"artifact {missing} was not found: the server answered HTTP {status} {phrase}"
    )
    assert caught.value.status == status
    assert leftovers(cache) == []


def test_not_found_after_a_redirect_names_both_urls(
    cache: ArtifactCache, server: ArtifactServer
) -> None:
    start = server.url("redirect/absent.img")
    with pytest.raises(ArtifactNotFoundError) as caught:
        run(cache.fetch(start, DIGEST))
    assert f"{start} (redirected to {server.url('files/absent.img')})" in str(caught.value)


def test_server_error_names_the_url_and_the_status(
    cache: ArtifactCache, server: ArtifactServer
) -> None:
    failing = server.url("status/503")
    with pytest.raises(ArtifactHTTPError) as caught:
        run(cache.fetch(failing, DIGEST))
    assert str(caught.value) == (
        f"downloading {failing} failed: the server answered HTTP 503 Service Unavailable"
    )
    assert caught.value.status == 503
    assert leftovers(cache) == []


def test_redirect_loop_is_an_http_error(cache: ArtifactCache, server: ArtifactServer) -> None:
    with pytest.raises(ArtifactHTTPError, match="too many redirects"):
        run(cache.fetch(server.url("redirect-loop"), DIGEST))
    assert leftovers(cache) == []


def test_announced_size_over_the_limit_is_refused_before_the_body(
    cache: ArtifactCache, server: ArtifactServer
) -> None:
    huge = server.url("huge-length")
    with pytest.raises(ArtifactTooLargeError) as caught:
        run(cache.fetch(huge, None))
    assert (caught.value.limit, caught.value.size) == (8 * 2**30, HUGE)
    assert str(caught.value).startswith(
        f"artifact {huge} is larger than the limit of 8 GiB (8589934592 bytes): "
        "it is 10 GiB (10737418240 bytes)"
    )
    assert leftovers(cache) == []


def test_streamed_size_over_the_limit_is_refused_as_it_arrives(
    cache: ArtifactCache, server: ArtifactServer
) -> None:
    endless = server.url("stream/1000000")
    with pytest.raises(ArtifactTooLargeError) as caught:
        run(cache.fetch(endless, None, max_bytes=50_000))
    assert caught.value.size is None
    assert str(caught.value).startswith(
        f"artifact {endless} is larger than the limit of 48.8 KiB (50000 bytes): "
        "more bytes than that arrived"
    )
    assert leftovers(cache) == []


def test_truncated_body_is_a_broken_connection(
    cache: ArtifactCache, server: ArtifactServer, url: str
) -> None:
    lying = server.url("lying-length/initramfs.cpio")
    with pytest.raises(ArtifactConnectionError) as caught:
        run(cache.fetch(lying, DIGEST))
    assert str(caught.value).startswith(
        f"the connection to 127.0.0.1 broke while downloading {lying}: "
    )
    assert caught.value.host == "127.0.0.1"
    assert leftovers(cache) == []


def test_slow_download_times_out_after_timeout_s(
    cache: ArtifactCache, server: ArtifactServer
) -> None:
    slow = server.url("trickle/1000")
    started = time.monotonic()
    with pytest.raises(ArtifactTimeoutError) as caught:
        run(cache.fetch(slow, None, timeout_s=0.5))
    assert time.monotonic() - started < 3
    assert str(caught.value).startswith(f"gave up downloading {slow} after 0.5 s")
    assert caught.value.timeout_s == 0.5
    assert leftovers(cache) == []


def test_refused_connection_names_the_host(cache: ArtifactCache) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    unreachable = f"http://127.0.0.1:{port}/initramfs.cpio"
    with pytest.raises(ArtifactConnectionError) as caught:
        run(cache.fetch(unreachable, DIGEST, timeout_s=5))
    assert str(caught.value).startswith(f"cannot connect to 127.0.0.1 to download {unreachable}: ")
    assert "refused" in caught.value.reason.lower()
    assert leftovers(cache) == []


def test_empty_body_is_refused(cache: ArtifactCache, server: ArtifactServer) -> None:
    empty = server.publish("empty.img", b"")
    with pytest.raises(EmptyArtifactError, match=f"artifact {empty} is empty"):
        run(cache.fetch(empty, None))
    assert leftovers(cache) == []


def test_bad_checksum_never_reaches_the_server(
    cache: ArtifactCache, server: ArtifactServer, url: str
) -> None:
    for bad in ("sha256:…", f"md5:{DIGEST[:32]}", DIGEST[:40]):
        with pytest.raises(InvalidChecksumError, match="64 hex digits"):
            run(cache.fetch(url, bad))
    assert server.requests == []


def test_concurrent_fetches_of_one_digest_leave_one_blob(
    cache: ArtifactCache, server: ArtifactServer, url: str
) -> None:
    async def together() -> tuple[CachedArtifact, CachedArtifact]:
        return await asyncio.gather(cache.fetch(url, DIGEST), cache.fetch(url, DIGEST))

    first, second = run(together())
    assert first.path == second.path == cache.path_for(DIGEST)
    assert first.path.read_bytes() == CONTENT
    assert len(server.requests) == 2  # both downloaded; the second rename found the blob
    assert leftovers(cache) == [f"sha256/{DIGEST}"]


def test_cancelled_download_leaves_nothing(cache: ArtifactCache, server: ArtifactServer) -> None:
    async def cancel_midway() -> list[str]:
        task = asyncio.create_task(cache.fetch(server.url("trickle/1000"), None))
        while not server.requests:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        during = leftovers(cache)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during

    during = run(cancel_midway())
    assert len(during) == 1 and during[0].startswith("tmp/fetch-")
    assert leftovers(cache) == []
