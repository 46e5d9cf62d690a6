"""Small plugin manifests and artifact files for control-plane tests (no boot needed)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path


def artifact(folder: Path, name: str, content: bytes) -> tuple[Path, str]:
    """Write an artifact file; return it and its `sha256:` checksum."""
    path = folder / name
    path.write_bytes(content)
    return path, "sha256:" + hashlib.sha256(content).hexdigest()


def manifest(name: str, url: str, checksum: str | None, version: str = "1.0.0") -> dict:
    """A minimal valid initramfs plugin manifest."""
    initramfs: dict = {"url": url}
    if checksum is not None:
        initramfs["checksum"] = checksum
    return {
        "schema_version": "v1",
        "name": name,
        "version": version,
        "initramfs": initramfs,
        "workload": {"entrypoint": ["/bin/httpd", "-f"], "base_url": "http://127.0.0.1:80"},
        "health_check": {"endpoint": "/"},
    }


def bzimage(release: str) -> bytes:
    """The x86 boot header fields volantd's kernel store reads from a kernel, and padding: a
    stand-in kernel for tests whose VMM runs nothing."""
    image = bytearray(0x2000)
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x020F)
    image[0x600 : 0x600 + len(release) + 1] = release.encode() + b"\0"
    struct.pack_into("<H", image, 0x20E, 0x400)
    return bytes(image)
