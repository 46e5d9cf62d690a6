"""Plugins: install, replace, enable, list, and removal guarded by the VMs that use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import pytest
import sqlalchemy as sa

from volantd.store import (
    ArtifactRecord,
    ConflictError,
    Database,
    NotFoundError,
    PluginRecord,
    VMRecord,
)

MakeVM = Callable[..., VMRecord]


def caddy(version: str = "1.0.0", enabled: bool = True) -> PluginRecord:
    manifest = {"name": "caddy", "version": version, "resources": {"cpu_cores": 1}}
    return PluginRecord(
        name="caddy", version=version, runtime="caddy", manifest=manifest, enabled=enabled
    )


def test_an_added_plugin_reads_back_with_utc_install_times(db: Database) -> None:
    added = db.plugins.add(caddy())
    assert db.plugins.get("caddy") == added
    assert added.manifest == {"name": "caddy", "version": "1.0.0", "resources": {"cpu_cores": 1}}
    assert added.enabled is True
    assert added.installed_at.tzinfo is UTC
    assert added.installed_at == added.updated_at


def test_adding_an_installed_plugin_is_a_conflict(db: Database) -> None:
    db.plugins.add(caddy())
    with pytest.raises(ConflictError, match=r'^plugin "caddy" already exists$'):
        db.plugins.add(caddy("2.0.0"))
    assert db.plugins.get("caddy").version == "1.0.0"


def test_unknown_plugins_are_not_found(db: Database) -> None:
    assert db.plugins.find("nope") is None
    with pytest.raises(NotFoundError, match=r'^plugin "nope" not found$'):
        db.plugins.get("nope")
    with pytest.raises(NotFoundError, match=r'^plugin "nope" not found$'):
        db.plugins.set_enabled("nope", False)
    with pytest.raises(NotFoundError, match=r'^plugin "nope" not found$'):
        db.plugins.remove("nope")


def test_replace_updates_the_plugin_but_keeps_its_install_time(db: Database) -> None:
    first = db.plugins.add(caddy())
    second = db.plugins.replace(caddy("2.0.0", enabled=False))
    assert (second.version, second.manifest["version"], second.enabled) == ("2.0.0", "2.0.0", False)
    assert second.installed_at == first.installed_at
    assert second.updated_at > first.updated_at
    assert db.plugins.get("caddy") == second


def test_replace_installs_a_plugin_that_is_not_there(db: Database) -> None:
    installed = db.plugins.replace(caddy())
    assert db.plugins.get("caddy") == installed


def test_list_is_sorted_by_name(db: Database) -> None:
    for name in ("nginx", "caddy", "browser"):
        db.plugins.add(PluginRecord(name=name, version="1", runtime=name, manifest={}))
    assert [plugin.name for plugin in db.plugins.list()] == ["browser", "caddy", "nginx"]


def test_disabling_persists(db: Database) -> None:
    db.plugins.add(caddy())
    disabled = db.plugins.set_enabled("caddy", False)
    assert disabled.enabled is False
    assert db.plugins.get("caddy").enabled is False
    assert db.plugins.set_enabled("caddy", True).enabled is True


def test_a_plugin_in_use_cannot_be_removed(db: Database, make_vm: MakeVM) -> None:
    make_vm("web-2")
    make_vm("web-1")
    assert db.plugins.in_use_by("caddy") == ["web-1", "web-2"]
    with pytest.raises(
        ConflictError, match=r'^plugin "caddy" is still used by vms "web-1", "web-2"; delete'
    ):
        db.plugins.remove("caddy")
    assert db.plugins.find("caddy") is not None


def test_removing_a_plugin_forgets_its_artifacts(db: Database, make_vm: MakeVM) -> None:
    make_vm("web-1")
    db.artifacts.put(
        ArtifactRecord(
            plugin_name="caddy",
            version="1.0.0",
            name="initramfs",
            kind="initramfs",
            sha256="ab" * 32,
            size_bytes=10,
            cache_path=Path("/cache/sha256") / ("ab" * 32),
        )
    )
    db.vms.delete("web-1")
    db.plugins.remove("caddy")
    assert db.plugins.find("caddy") is None
    assert db.plugins.in_use_by("caddy") == []
    assert db.artifacts.list("caddy") == []


def rootfs(version: str, digest: str) -> ArtifactRecord:
    return ArtifactRecord(
        plugin_name="caddy",
        version=version,
        name="rootfs",
        kind="rootfs",
        sha256=digest,
        size_bytes=1 << 20,
        cache_path=Path("/cache/sha256") / digest,
    )


def test_install_records_the_plugin_and_its_artifacts_together(db: Database) -> None:
    first = db.plugins.install(caddy("1.0.0"), [rootfs("1.0.0", "aa" * 32)])
    assert db.plugins.get("caddy") == first
    assert [record.sha256 for record in db.artifacts.list("caddy", "1.0.0")] == ["aa" * 32]
    second = db.plugins.install(caddy("2.0.0"), [rootfs("2.0.0", "bb" * 32)])
    assert (second.version, second.installed_at) == ("2.0.0", first.installed_at)
    assert [record.version for record in db.artifacts.list("caddy")] == ["2.0.0", "1.0.0"]


def test_a_failed_install_records_nothing(db: Database) -> None:
    broken = replace(rootfs("1.0.0", "aa" * 32), size_bytes=None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError):
        db.plugins.install(caddy(), [rootfs("1.0.0", "cc" * 32), broken])
    assert db.plugins.find("caddy") is None
    assert db.artifacts.list("caddy") == []
    with pytest.raises(ValueError, match='belongs to plugin "nginx", not "caddy"'):
        db.plugins.install(caddy(), [replace(rootfs("1.0.0", "aa" * 32), plugin_name="nginx")])
    assert db.plugins.find("caddy") is None
