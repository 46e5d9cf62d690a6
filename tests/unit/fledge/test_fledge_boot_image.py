"""The volant boot initramfs: init, kestrel and the Python runtime, nothing of a plugin."""

from __future__ import annotations

from pathlib import Path

from fledge.bootimage import boot_image_entries, boot_image_key, build_boot_image


def test_the_key_is_a_stable_digest_of_the_inputs() -> None:
    key = boot_image_key()
    assert key == boot_image_key()
    assert len(key) == 24 and int(key, 16) >= 0


def test_the_image_holds_init_agent_and_runtime_and_the_root_mount_point() -> None:
    entries = {entry.path: entry for entry in boot_image_entries()}
    assert entries["/init"].mode & 0o777 == 0o755
    assert entries["/init"].data[:4] == b"\x7fELF"
    assert entries["/opt/volant/kestrel.pyz"].data[:2] == b"PK"
    for path in (
        "/opt/volant/python/bin/python3",
        "/opt/volant/python/lib/ld-linux-x86-64.so.2",
        "/opt/volant/python/lib/python3.11/os.pyc",
    ):
        assert path in entries, path
    assert entries["/newroot"].kind == "dir"
    assert entries["/dev/console"].kind == "chardev"
    assert not any(path.startswith("/bin/") for path in entries)  # no busybox: the image's own


def test_builds_are_reproducible(tmp_path: Path) -> None:
    first = build_boot_image(tmp_path / "a.cpio.zst", compression="zstd")
    second = build_boot_image(tmp_path / "b.cpio.zst", compression="zstd")
    assert first.key == second.key == boot_image_key()
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert first.entries > 100 and first.size == first.path.stat().st_size
