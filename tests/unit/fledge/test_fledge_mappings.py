"""[mappings]: host files into the image, with modes and symlinks kept and no escapes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from fledge.errors import FledgeError
from fledge.mappings import mapping_entries
from fledge.tree import ImageTree
from pluginspec.cpio import CpioEntry


def tree_of(entries: list[CpioEntry]) -> dict[str, CpioEntry]:
    return {entry.path: entry for entry in entries}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "payload" / "bin").mkdir(parents=True)
    (root / "payload" / "bin" / "app").write_text("#!/bin/sh\n")
    os.chmod(root / "payload" / "bin" / "app", 0o750)
    (root / "payload" / "secret.key").write_text("k")
    os.chmod(root / "payload" / "secret.key", 0o600)
    (root / "payload" / "cache").mkdir()
    os.chmod(root / "payload" / "cache", 0o1777)
    return root


def test_a_file_keeps_its_mode_and_is_owned_by_root(project: Path) -> None:
    os.chmod(project / "payload" / "bin" / "app", 0o6755)  # setuid and setgid are dropped
    [entry] = mapping_entries("payload/bin/app", "/usr/bin/app", project)
    assert (entry.path, entry.kind, entry.mode, entry.data) == (
        "/usr/bin/app",
        "file",
        0o755,
        b"#!/bin/sh\n",
    )
    assert (entry.uid, entry.gid) == (0, 0)
    [secret] = mapping_entries("./payload/secret.key", "/etc/ssl/private/x.key", project)
    assert secret.mode == 0o600  # upstream made private keys 0644


def test_a_file_mapped_to_a_folder_path_keeps_its_name(project: Path) -> None:
    [entry] = mapping_entries("./payload/bin/app", "/usr/local/bin/", project)
    assert entry.path == "/usr/local/bin/app"
    [top] = mapping_entries("payload/secret.key", "/", project)
    assert top.path == "/secret.key"


def test_a_folder_is_copied_recursively_with_folder_modes(project: Path) -> None:
    entries = tree_of(mapping_entries("payload", "/opt/app/", project))
    assert sorted(entries) == [
        "/opt/app",
        "/opt/app/bin",
        "/opt/app/bin/app",
        "/opt/app/cache",
        "/opt/app/secret.key",
    ]
    assert entries["/opt/app/cache"].kind == "dir" and entries["/opt/app/cache"].mode == 0o1777
    assert entries["/opt/app/bin/app"].mode == 0o750
    assert entries["/opt/app/secret.key"].mode == 0o600


def test_symlinks_inside_the_folder_stay_symlinks(project: Path) -> None:
    (project / "payload" / "current").symlink_to("bin/app")
    (project / "payload" / "bin" / "up").symlink_to("../secret.key")
    (project / "payload" / "bin" / "self").symlink_to(".")
    (project / "payload" / "dangling").symlink_to("not-there-yet")
    entries = tree_of(mapping_entries("payload", "/opt/app", project))
    assert entries["/opt/app/current"] == CpioEntry.symlink("/opt/app/current", "bin/app")
    assert entries["/opt/app/bin/up"].target == "../secret.key"
    assert entries["/opt/app/bin/self"].target == "."
    assert entries["/opt/app/dangling"].target == "not-there-yet"


def test_a_symlink_out_of_the_mapped_folder_is_an_error(project: Path) -> None:
    (project / "outside.txt").write_text("not mapped")
    (project / "payload" / "bin" / "escape").symlink_to("../../outside.txt")
    with pytest.raises(FledgeError) as info:
        mapping_entries("payload", "/opt/app", project)
    message = str(info.value)
    assert "payload/bin/escape -> ../../outside.txt points outside the mapped folder" in message


def test_an_absolute_symlink_is_an_error_never_a_copy_of_the_host_file(project: Path) -> None:
    (project / "payload" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(FledgeError, match=r"payload/passwd -> /etc/passwd is absolute"):
        mapping_entries("payload", "/opt/app", project)


def test_a_source_reached_through_a_symlink_out_of_the_project_is_an_error(
    tmp_path: Path, project: Path
) -> None:
    private = tmp_path / "home" / ".ssh"
    private.mkdir(parents=True)
    (private / "id_ed25519").write_text("private key")
    (project / "keys").symlink_to(private)
    (project / "key").symlink_to(private / "id_ed25519")
    for source in ("keys", "keys/id_ed25519", "key"):
        with pytest.raises(FledgeError, match=r"leads through a symlink to .* outside"):
            mapping_entries(source, "/etc/keys", project)


def test_a_source_symlink_inside_the_project_is_followed(project: Path) -> None:
    (project / "app").symlink_to("payload/bin/app")
    [entry] = mapping_entries("app", "/usr/bin/app", project)
    assert entry.kind == "file" and entry.data == b"#!/bin/sh\n"


def test_an_absolute_source_means_what_it_says(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared" / "config.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("a: 1\n")
    [entry] = mapping_entries(str(elsewhere), "/etc/app.yaml", project)
    assert entry.data == b"a: 1\n"
    [relative] = mapping_entries("../shared/config.yaml", "/etc/app.yaml", project)
    assert relative.data == b"a: 1\n"


def test_a_missing_source_names_the_path_as_written_and_resolved(project: Path) -> None:
    with pytest.raises(FledgeError) as info:
        mapping_entries("./payload/nope", "/x", project)
    assert str(info.value) == (
        f"mapping './payload/nope' = '/x': './payload/nope' does not exist (resolved to "
        f"{project.resolve() / 'payload' / 'nope'}; relative paths are relative to the "
        f"config's folder {project.resolve()})"
    )


@pytest.mark.parametrize("destination", ["/opt/../../etc/passwd", "../etc", "etc/passwd"])
def test_destinations_must_stay_inside_the_image(project: Path, destination: str) -> None:
    with pytest.raises(FledgeError, match=r"must be an absolute path|leads outside the image"):
        mapping_entries("payload/bin/app", destination, project)


def test_special_files_in_a_mapped_folder_are_errors(project: Path) -> None:
    os.mkfifo(project / "payload" / "pipe")
    with pytest.raises(FledgeError, match=r"payload/pipe is a FIFO"):
        mapping_entries("payload", "/opt/app", project)
    (project / "payload" / "pipe").unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(project / "payload" / "sock"))
        with pytest.raises(FledgeError, match=r"payload/sock is a socket"):
            mapping_entries("payload", "/opt/app", project)


def test_the_output_folder_is_skipped(project: Path) -> None:
    (project / "payload" / "build").mkdir()
    (project / "payload" / "build" / "plugin.cpio.zst").write_bytes(b"old output")
    entries = tree_of(
        mapping_entries("payload", "/app", project, exclude=[project / "payload" / "build"])
    )
    assert "/app/build" not in entries and "/app/bin/app" in entries


def test_a_file_cannot_go_under_an_image_symlink_or_replace_a_full_folder() -> None:
    tree = ImageTree()
    tree.add(CpioEntry.symlink("/lib", "usr/lib"), "mapping 'lib'")
    with pytest.raises(FledgeError, match=r"/lib is a symlink there .*not a directory"):
        tree.add(CpioEntry.file("/lib/libc.so", b""), "mapping 'libc'")
    tree.add(CpioEntry.file("/etc/hosts", b""), "skeleton")
    with pytest.raises(FledgeError, match=r"it is a directory in the image holding /etc/hosts"):
        tree.add(CpioEntry.file("/etc", b""), "mapping 'etc'")


def test_later_entries_replace_earlier_ones_and_folders_merge() -> None:
    tree = ImageTree()
    tree.add(CpioEntry.file("/init", b"compiled", 0o755), "init.c")
    tree.add(CpioEntry.directory("/etc", 0o755), "skeleton")
    tree.add(CpioEntry.file("/etc/hosts", b"a"), "skeleton")
    tree.add(CpioEntry.file("/init", b"mine", 0o700), "mapping 'my-init'")
    tree.add(CpioEntry.directory("/etc", 0o750), "mapping 'etc'")
    entries = {entry.path: entry for entry in tree.entries()}
    assert entries["/init"].data == b"mine" and tree.origin("/init") == "mapping 'my-init'"
    assert entries["/etc"].mode == 0o750 and "/etc/hosts" in entries
    assert [entry.path for entry in tree.entries()] == ["/etc", "/etc/hosts", "/init"]
