"""Artifact metadata: one record per (plugin, version, name), newest version first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from volantd.store import ArtifactRecord, Database, NotFoundError, PluginRecord


def artifact(version: str, name: str, digest: str = "0" * 64, **fields: Any) -> ArtifactRecord:
    values: dict[str, Any] = {
        "plugin_name": "caddy",
        "version": version,
        "name": name,
        "kind": name,
        "sha256": digest,
        "size_bytes": 4096,
        "cache_path": Path("/var/lib/volant/cache/sha256") / digest,
    }
    values.update(fields)
    return ArtifactRecord(**values)


def test_put_then_get_returns_every_field(db: Database, plugin: PluginRecord) -> None:
    stored = db.artifacts.put(
        artifact("1.0.0", "rootfs", "a" * 64, source_url="https://example.test/r", format="ext4")
    )
    assert stored.id > 0
    assert db.artifacts.get("caddy", "1.0.0", "rootfs") == stored
    assert stored.cache_path == Path("/var/lib/volant/cache/sha256") / ("a" * 64)
    assert (stored.source_url, stored.format, stored.size_bytes) == (
        "https://example.test/r",
        "ext4",
        4096,
    )


def test_put_replaces_the_artifact_with_the_same_key(db: Database, plugin: PluginRecord) -> None:
    db.artifacts.put(artifact("1.0.0", "rootfs", "a" * 64))
    replaced = db.artifacts.put(artifact("1.0.0", "rootfs", "b" * 64, size_bytes=1))
    assert db.artifacts.list("caddy") == [replaced]
    assert (replaced.sha256, replaced.size_bytes) == ("b" * 64, 1)


def test_list_orders_versions_newest_first_then_names(db: Database, plugin: PluginRecord) -> None:
    for version, name in [
        ("1.9.0", "rootfs"),
        ("1.10.0", "rootfs"),
        ("1.10.0", "initramfs"),
        ("1.2.0", "disk"),
    ]:
        db.artifacts.put(artifact(version, name))
    listed = [(record.version, record.name) for record in db.artifacts.list("caddy")]
    assert listed == [
        ("1.10.0", "initramfs"),
        ("1.10.0", "rootfs"),
        ("1.9.0", "rootfs"),
        ("1.2.0", "disk"),
    ]
    assert [record.name for record in db.artifacts.list("caddy", "1.10.0")] == [
        "initramfs",
        "rootfs",
    ]
    assert db.artifacts.list("other") == []


def test_delete_forgets_one_version_or_all(db: Database, plugin: PluginRecord) -> None:
    for version in ("1", "2"):
        db.artifacts.put(artifact(version, "rootfs"))
        db.artifacts.put(artifact(version, "initramfs"))
    assert db.artifacts.delete("caddy", "1") == 2
    assert {record.version for record in db.artifacts.list("caddy")} == {"2"}
    assert db.artifacts.delete("caddy") == 2
    assert db.artifacts.list("caddy") == []


def test_missing_artifacts_and_plugins_are_named(db: Database, plugin: PluginRecord) -> None:
    with pytest.raises(
        NotFoundError, match=r'^artifact "rootfs" of plugin "caddy" version "9" not found$'
    ):
        db.artifacts.get("caddy", "9", "rootfs")
    with pytest.raises(NotFoundError, match=r'^plugin "nginx" not found$'):
        db.artifacts.put(artifact("1", "rootfs", plugin_name="nginx"))
