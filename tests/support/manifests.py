"""Small plugin manifests and artifact files for control-plane tests (no boot needed)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any


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


def add_agentless_plugin(db: Any, folder: Path, name: str, **fields: Any) -> None:
    """Record plugin `name` (an initramfs with no workload, so no agent to wait for, plus
    `fields`) and its cached artifact in store `db`, as an install would: for orchestrator
    tests whose VMM runs nothing."""
    from volantd.store import ArtifactRecord, PluginRecord

    image, checksum = artifact(folder, "vm.cpio", b"070701 an initramfs")
    body = manifest(name, str(image), checksum)
    del body["workload"], body["health_check"]
    body.update(fields)
    db.plugins.add(PluginRecord(name=name, version="1.0.0", runtime=name, manifest=body))
    db.artifacts.put(
        ArtifactRecord(plugin_name=name, version="1.0.0", name="initramfs", kind="initramfs",
                       sha256=checksum, size_bytes=image.stat().st_size, cache_path=image)
    )  # fmt: skip
