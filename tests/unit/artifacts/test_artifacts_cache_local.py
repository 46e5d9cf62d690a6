"""ArtifactCache with local sources: paths, relative paths and file:// URLs, real files only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from volantd import artifacts
from volantd.artifacts import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT_S,
    ArtifactCache,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactTooLargeError,
    CachedArtifact,
    ChecksumMismatchError,
    EmptyArtifactError,
    InvalidChecksumError,
    InvalidSourceError,
    NotARegularFileError,
)
from volantd.errors import VolantError

T = TypeVar("T")
CONTENT = b"volant initramfs\n" * 4096
DIGEST = hashlib.sha256(CONTENT).hexdigest()
OTHER = hashlib.sha256(b"something else").hexdigest()
NOBODY = 65534


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def leftovers(cache: ArtifactCache) -> list[str]:
    """Everything in the cache's folders, as paths relative to its root."""
    return sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*") if p.is_file())


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "initramfs.cpio").write_bytes(CONTENT)
    return folder


def test_defaults() -> None:
    assert DEFAULT_MAX_BYTES == 8 * 2**30
    assert DEFAULT_TIMEOUT_S == 600


def test_fetch_copies_a_path_into_a_read_only_blob_named_by_its_digest(
    cache: ArtifactCache, plugin_dir: Path
) -> None:
    source = str(plugin_dir / "initramfs.cpio")
    artifact = run(cache.fetch(source, f"sha256:{DIGEST}"))
    assert artifact == CachedArtifact(
        digest=DIGEST, path=cache.root / "sha256" / DIGEST, size=len(CONTENT), source=source
    )
    assert artifact.checksum == f"sha256:{DIGEST}"
    assert artifact.path.read_bytes() == CONTENT
    assert stat.S_IMODE(artifact.path.stat().st_mode) == 0o444
    assert cache.path_for(DIGEST) == artifact.path
    assert cache.has(DIGEST) and cache.has(f"sha256:{DIGEST.upper()}")
    assert leftovers(cache) == [f"sha256/{DIGEST}"]


def test_relative_path_resolves_against_base_dir(cache: ArtifactCache, plugin_dir: Path) -> None:
    artifact = run(cache.fetch("initramfs.cpio", DIGEST, base_dir=plugin_dir))
    assert artifact.digest == DIGEST
    assert artifact.source == "initramfs.cpio"


def test_relative_path_without_base_dir_is_refused(cache: ArtifactCache) -> None:
    with pytest.raises(InvalidSourceError, match="is relative"):
        run(cache.fetch("initramfs.cpio", DIGEST))


def test_file_url(cache: ArtifactCache, plugin_dir: Path) -> None:
    artifact = run(cache.fetch((plugin_dir / "initramfs.cpio").as_uri(), DIGEST))
    assert artifact.path.read_bytes() == CONTENT


def test_without_expected_digest_the_computed_one_is_returned(
    cache: ArtifactCache, plugin_dir: Path
) -> None:
    artifact = run(cache.fetch("initramfs.cpio", None, base_dir=plugin_dir))
    assert artifact.digest == DIGEST
    assert cache.has(DIGEST)


def test_cache_hit_does_not_read_the_source(cache: ArtifactCache, plugin_dir: Path) -> None:
    run(cache.fetch("initramfs.cpio", DIGEST, base_dir=plugin_dir))
    (plugin_dir / "initramfs.cpio").unlink()
    artifact = run(cache.fetch("initramfs.cpio", f"sha256:{DIGEST}", base_dir=plugin_dir))
    assert artifact.path.read_bytes() == CONTENT
    assert artifact.size == len(CONTENT)


def test_the_name_is_not_trusted_every_byte_is_hashed(cache: ArtifactCache, tmp_path: Path) -> None:
    impostor = tmp_path / DIGEST
    impostor.write_bytes(b"not what the name says")
    with pytest.raises(ChecksumMismatchError):
        run(cache.fetch(str(impostor), DIGEST))


def test_mismatch_names_both_digests_and_the_source_and_leaves_nothing(
    cache: ArtifactCache, plugin_dir: Path
) -> None:
    with pytest.raises(ChecksumMismatchError) as caught:
        run(cache.fetch("initramfs.cpio", f"sha256:{OTHER}", base_dir=plugin_dir))
    error = caught.value
    assert (error.expected, error.actual) == (OTHER, DIGEST)
    path = plugin_dir.resolve() / "initramfs.cpio"
    assert str(error).startswith(
        f"artifact {path} has sha256:{DIGEST}, but the manifest says sha256:{OTHER}"
    )
    assert error.source == str(path)
    assert leftovers(cache) == []
    assert not cache.has(DIGEST) and not cache.has(OTHER)


def test_bad_checksum_is_refused_before_anything_is_read(cache: ArtifactCache) -> None:
    with pytest.raises(InvalidChecksumError, match="'sha256:…'"):
        run(cache.fetch("/does/not/exist", "sha256:…"))
    assert not cache.root.exists()


def test_missing_file_names_the_path(cache: ArtifactCache, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError) as caught:
        run(cache.fetch("nope.img", DIGEST, base_dir=tmp_path))
    assert str(caught.value).startswith(
        f"artifact {tmp_path.resolve() / 'nope.img'} does not exist"
    )
    assert caught.value.status is None
    assert leftovers(cache) == []


def test_a_file_used_as_a_folder_is_not_found(cache: ArtifactCache, plugin_dir: Path) -> None:
    with pytest.raises(ArtifactNotFoundError):
        run(cache.fetch("initramfs.cpio/inner", DIGEST, base_dir=plugin_dir))


def test_directory_is_refused(cache: ArtifactCache, plugin_dir: Path) -> None:
    with pytest.raises(NotARegularFileError, match="is a directory, not a regular file"):
        run(cache.fetch(str(plugin_dir), DIGEST))
    assert leftovers(cache) == []


def test_fifo_is_refused_without_blocking(cache: ArtifactCache, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFileError, match="is a fifo"):
        run(cache.fetch(str(fifo), DIGEST))
    assert leftovers(cache) == []


def test_device_is_refused(cache: ArtifactCache) -> None:
    with pytest.raises(NotARegularFileError, match="/dev/zero is a character device"):
        run(cache.fetch("/dev/zero", None))


@contextmanager
def unprivileged() -> Iterator[None]:
    """Act as nobody for a moment, so that file modes apply when the tests run as root."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_file_is_permission_denied() -> None:
    folder = Path(tempfile.mkdtemp(prefix="volant-artifacts-"))  # not under root's 0700 tmp
    try:
        folder.chmod(0o777)
        unreadable = folder / "initramfs.cpio"
        unreadable.write_bytes(CONTENT)
        unreadable.chmod(0)
        cache = ArtifactCache(folder / "cache")
        with unprivileged(), pytest.raises(ArtifactPermissionError) as caught:
            run(cache.fetch(str(unreadable), DIGEST))
        assert str(caught.value).startswith(
            f"permission denied reading artifact {unreadable.resolve()}"
        )
        assert leftovers(cache) == []
    finally:
        shutil.rmtree(folder)


def test_file_over_the_limit_is_refused(cache: ArtifactCache, plugin_dir: Path) -> None:
    with pytest.raises(ArtifactTooLargeError) as caught:
        run(cache.fetch("initramfs.cpio", DIGEST, base_dir=plugin_dir, max_bytes=1000))
    assert caught.value.limit == 1000
    assert f"larger than the limit of 1000 bytes: it is 68 KiB ({len(CONTENT)}" in (
        str(caught.value)
    )
    assert leftovers(cache) == []


def test_empty_file_is_refused(cache: ArtifactCache, tmp_path: Path) -> None:
    (tmp_path / "empty.img").touch()
    with pytest.raises(EmptyArtifactError, match="is empty"):
        run(cache.fetch("empty.img", None, base_dir=tmp_path))
    assert leftovers(cache) == []


def test_concurrent_fetches_of_one_digest_leave_one_blob(
    cache: ArtifactCache, plugin_dir: Path
) -> None:
    async def both() -> list[CachedArtifact]:
        return await asyncio.gather(
            *(cache.fetch("initramfs.cpio", DIGEST, base_dir=plugin_dir) for _ in range(4))
        )

    artifacts = run(both())
    assert {a.path for a in artifacts} == {cache.path_for(DIGEST)}
    assert leftovers(cache) == [f"sha256/{DIGEST}"]


def test_remove(cache: ArtifactCache, plugin_dir: Path) -> None:
    run(cache.fetch("initramfs.cpio", DIGEST, base_dir=plugin_dir))
    assert cache.remove(DIGEST)
    assert not cache.has(DIGEST)
    assert not cache.remove(DIGEST)


def test_has_ignores_empty_files_and_folders(cache: ArtifactCache) -> None:
    cache.path_for(DIGEST).parent.mkdir(parents=True)
    cache.path_for(DIGEST).touch()
    cache.path_for(OTHER).mkdir()
    assert not cache.has(DIGEST)
    assert not cache.has(OTHER)


def test_path_for_only_takes_digests(cache: ArtifactCache) -> None:
    with pytest.raises(InvalidChecksumError):
        cache.path_for("../../etc/passwd")


def test_an_empty_stale_blob_is_replaced(cache: ArtifactCache, plugin_dir: Path) -> None:
    cache.path_for(DIGEST).parent.mkdir(parents=True)
    cache.path_for(DIGEST).touch()
    artifact = run(cache.fetch("initramfs.cpio", DIGEST, base_dir=plugin_dir))
    assert artifact.path.read_bytes() == CONTENT


def test_every_artifact_error_is_a_volant_error() -> None:
    errors = [
        value
        for name in artifacts.__all__
        if isinstance(value := getattr(artifacts, name), type) and issubclass(value, Exception)
    ]
    assert len(errors) == 14
    assert all(issubclass(error, ArtifactError) for error in errors)
    assert issubclass(ArtifactError, VolantError)
