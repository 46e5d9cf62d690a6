"""File upload and download helpers: path and mode checks, atomic writes."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kestrel.files import (
    FileMissingError,
    FileRequestError,
    check_path,
    open_download,
    parse_mode,
    receive_file,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/tmp/a", "/tmp/a"), ("/tmp//b/../c", "/tmp/c"), ("/x/", "/x")],
)
def test_paths_are_absolute_and_normalised(given: str, expected: str) -> None:
    assert check_path(given) == expected


@pytest.mark.parametrize("bad", [None, "", "relative", "/", "/a/../", "/a\x00b"])
def test_bad_paths(bad: str | None) -> None:
    with pytest.raises(FileRequestError):
        check_path(bad)


def test_modes() -> None:
    assert parse_mode(None) == 0o644
    assert parse_mode("0755") == parse_mode("755") == parse_mode("0o755") == 0o755
    for bad in ("rw", "8", "77777"):
        with pytest.raises(FileRequestError):
            parse_mode(bad)


async def _chunks(*parts: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise ConnectionResetError("client went away")


def test_upload_is_atomic_and_cleans_up_after_a_broken_transfer(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    written = asyncio.run(receive_file(str(target), 0o640, _chunks(b"one ", b"two")))
    assert written == {"path": str(target), "size": 7, "mode": "0640", "created": True}
    assert target.read_bytes() == b"one two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640

    with pytest.raises(ConnectionResetError):
        asyncio.run(receive_file(str(target), 0o644, _chunks(b"partial", fail=True)))
    assert target.read_bytes() == b"one two"  # the old content survives
    assert os.listdir(target.parent) == ["file.txt"]


def test_upload_refuses_a_directory_or_a_file_as_parent(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FileRequestError, match="is a directory"):
        asyncio.run(receive_file(str(tmp_path), 0o644, _chunks(b"x")))
    with pytest.raises(FileRequestError, match="not a directory"):
        asyncio.run(receive_file(str(tmp_path / "plain" / "f"), 0o644, _chunks(b"x")))


def test_download_opens_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    download = open_download(str(tmp_path / "f"))
    assert download.size == 4
    download.file.close()
    with pytest.raises(FileMissingError, match=str(tmp_path / "nope")):
        open_download(str(tmp_path / "nope"))
    with pytest.raises(FileRequestError, match="is a directory"):
        open_download(str(tmp_path))
    with pytest.raises(FileRequestError, match="not a regular file"):
        open_download("/dev/null")
    proc = open_download("/proc/self/status")  # size 0 but has content: streamed without length
    assert proc.size is None
    proc.file.close()
