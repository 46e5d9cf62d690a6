"""Reproducible newc archives, read back with libarchive."""

import gzip
from pathlib import Path

import libarchive
import pytest

from pluginspec.cpio import CpioEntry, cpio_bytes, write_cpio

ENTRIES = [
    CpioEntry.file("/etc/volant/vm.json", b"{}\n"),
    CpioEntry.file("init", b"#!/bin/sh\n", 0o755),
    CpioEntry.symlink("/bin/sh", "busybox"),
    CpioEntry.chardev("/dev/console", 5, 1),
    CpioEntry.directory("/tmp", 0o1777),
]


def read_back(data: bytes) -> dict[str, libarchive.ArchiveEntry]:
    found = {}
    with libarchive.memory_reader(data) as archive:
        for entry in archive:
            found[entry.pathname] = (
                entry.isdir,
                entry.issym and entry.linkpath,
                entry.ischr and (entry.rdevmajor, entry.rdevminor),
                entry.mode & 0o7777,
                b"".join(entry.get_blocks()) if entry.isreg else None,
                entry.mtime,
                entry.uid,
            )
    return found


def test_same_entries_in_any_order_give_identical_bytes():
    assert cpio_bytes(ENTRIES) == cpio_bytes(list(reversed(ENTRIES)))


def test_members_keep_kind_mode_content_and_fixed_metadata():
    found = read_back(cpio_bytes(ENTRIES))
    assert found["init"][3:5] == (0o755, b"#!/bin/sh\n")
    assert found["bin/sh"][1] == "busybox"
    assert found["dev/console"][2] == (5, 1)
    assert found["tmp"][0] and found["tmp"][3] == 0o1777
    assert found["etc/volant"][0]  # parents are added as directories
    assert {meta[5] for meta in found.values()} == {0}
    assert {meta[6] for meta in found.values()} == {0}


def test_gzip_output_is_reproducible(tmp_path: Path):
    write_cpio(tmp_path / "a", ENTRIES, "gzip")
    write_cpio(tmp_path / "b", ENTRIES[::-1], "gzip")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert gzip.decompress((tmp_path / "a").read_bytes()) == cpio_bytes(ENTRIES)


def test_paths_escaping_the_root_are_refused():
    with pytest.raises(ValueError, match=r"must not contain '\.\.'"):
        cpio_bytes([CpioEntry.file("../etc/passwd", b"")])
