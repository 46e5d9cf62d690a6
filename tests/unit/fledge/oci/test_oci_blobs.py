"""The blob cache: verified while streaming, atomic, resumable, locked."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fledge.errors import FledgeError
from fledge.oci.blobs import BlobCache, BlobStream, TransferInterrupted

DATA = bytes(range(256)) * 4096  # 1 MiB
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class FakeServer:
    """Serves DATA (or ``body``) in 64 KiB chunks; honours ranges unless told not to."""

    def __init__(
        self, body: bytes = DATA, *, ranges: bool = True, break_after: int | None = None
    ) -> None:
        self.body = body
        self.ranges = ranges
        self.break_after = break_after
        self.offsets: list[int] = []

    @contextmanager
    def open(self, offset: int) -> Iterator[BlobStream]:
        self.offsets.append(offset)
        start = offset if self.ranges else 0
        yield BlobStream(start, self._chunks(start))

    def _chunks(self, start: int) -> Iterator[bytes]:
        sent = 0
        for at in range(start, len(self.body), 65536):
            if self.break_after is not None and sent >= self.break_after:
                self.break_after = None
                raise TransferInterrupted("connection reset")
            chunk = self.body[at : at + 65536]
            sent += len(chunk)
            yield chunk


def test_a_download_is_verified_and_lands_under_its_digest(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    seen: list[int] = []
    path = cache.download(
        DIGEST, len(DATA), FakeServer().open, what="test", progress=lambda d, t: seen.append(d)
    )
    assert path == tmp_path / "oci" / "blobs" / "sha256" / DIGEST.removeprefix("sha256:")
    assert path.read_bytes() == DATA
    assert seen[-1] == len(DATA)
    assert not cache.partial_path(DIGEST).exists()
    assert cache.get(DIGEST, len(DATA)) == path


def test_a_cached_blob_is_not_fetched_again(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.download(DIGEST, len(DATA), FakeServer().open, what="test")
    again = FakeServer()
    cache.download(DIGEST, len(DATA), again.open, what="test")
    assert again.offsets == []


def test_wrong_content_is_an_error_naming_both_digests(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    evil = b"x" * len(DATA)
    with pytest.raises(FledgeError) as caught:
        cache.download(DIGEST, len(DATA), FakeServer(evil).open, what="image example:1")
    message = str(caught.value)
    assert "image example:1" in message and DIGEST in message
    assert "sha256:" + hashlib.sha256(evil).hexdigest() in message
    assert not cache.partial_path(DIGEST).exists() and not cache.path(DIGEST).exists()


def test_a_blob_longer_than_its_descriptor_is_refused(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    with pytest.raises(FledgeError, match="bytes, expected"):
        cache.download(DIGEST, len(DATA), FakeServer(DATA + b"more").open, what="test")
    with pytest.raises(FledgeError, match="failed verification"):
        cache.download(DIGEST, len(DATA) - 1, FakeServer().open, what="test")


def test_a_partial_download_resumes_with_a_range(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.root.mkdir(parents=True)
    cache.partial_path(DIGEST).write_bytes(DATA[:300_000])
    server = FakeServer()
    assert cache.download(DIGEST, len(DATA), server.open, what="test").read_bytes() == DATA
    assert server.offsets == [300_000]


def test_an_interrupted_download_is_resumed_where_it_broke(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    server = FakeServer(break_after=5 * 65536)
    assert cache.download(DIGEST, len(DATA), server.open, what="test").read_bytes() == DATA
    assert server.offsets == [0, 5 * 65536]


def test_a_server_ignoring_ranges_means_starting_over(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.root.mkdir(parents=True)
    cache.partial_path(DIGEST).write_bytes(DATA[:300_000])
    server = FakeServer(ranges=False)
    assert cache.download(DIGEST, len(DATA), server.open, what="test").read_bytes() == DATA
    assert server.offsets == [300_000]


def test_a_bad_partial_is_discarded_and_fetched_from_the_start(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.root.mkdir(parents=True)
    cache.partial_path(DIGEST).write_bytes(b"garbage" * 1000)
    notes: list[str] = []
    server = FakeServer()
    path = cache.download(DIGEST, len(DATA), server.open, what="test", on_restart=notes.append)
    assert path.read_bytes() == DATA
    assert server.offsets == [7000, 0]
    assert notes and "from the start" in notes[0]


def test_a_corrupted_cached_blob_is_fetched_again(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    path = cache.download(DIGEST, len(DATA), FakeServer().open, what="test")
    path.write_bytes(b"X" + DATA[1:])
    assert cache.get(DIGEST, len(DATA)) is None and not path.exists()
    server = FakeServer()
    assert cache.download(DIGEST, len(DATA), server.open, what="test").read_bytes() == DATA
    assert server.offsets == [0]


def test_concurrent_downloads_of_one_blob_fetch_it_once(tmp_path: Path) -> None:
    server = FakeServer()
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                BlobCache(tmp_path).download(DIGEST, len(DATA), server.open, what="test")
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert server.offsets == [0]


def test_local_content_is_ingested_with_or_without_a_known_digest(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    source = tmp_path / "blob"
    source.write_bytes(DATA)
    with source.open("rb") as handle:
        digest, path = cache.ingest(handle, what="test")
    assert digest == DIGEST and path.read_bytes() == DATA
    with source.open("rb") as handle, pytest.raises(FledgeError, match="failed verification"):
        cache.ingest(handle, what="layout", digest="sha256:" + "0" * 64, size=len(DATA))
    assert sorted(p.name for p in cache.root.iterdir()) == [DIGEST.removeprefix("sha256:")]


def test_malformed_digests_never_become_paths(tmp_path: Path) -> None:
    with pytest.raises(FledgeError, match="not sha256"):
        BlobCache(tmp_path).path("sha256:../../etc/passwd")


def test_a_download_that_keeps_breaking_gives_up_and_keeps_the_partial(tmp_path: Path) -> None:
    class Flaky(FakeServer):
        def _chunks(self, start: int) -> Iterator[bytes]:
            yield self.body[start : start + 1000]
            raise TransferInterrupted("connection reset by peer")

    cache = BlobCache(tmp_path)
    server = Flaky()
    with pytest.raises(FledgeError, match="kept failing: connection reset by peer; run the build"):
        cache.download(DIGEST, len(DATA), server.open, what="test")
    assert server.offsets == [0, 1000, 2000]
    assert cache.partial_path(DIGEST).read_bytes() == DATA[:3000]
