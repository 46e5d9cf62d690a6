"""Small plugin manifests and artifact files for control-plane tests (no boot needed)."""

from __future__ import annotations

import hashlib
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
