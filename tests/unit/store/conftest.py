"""A real SQLite store in a temporary VOLANT_HOME, and builders of the records it holds."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from volantd.store import Database, PluginRecord, VMRecord, open_database

NewVM = Callable[..., VMRecord]
MakeVM = Callable[..., VMRecord]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "volant.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = open_database(db_path)
    yield database
    database.close()


@pytest.fixture
def plugin(db: Database) -> PluginRecord:
    return db.plugins.add(
        PluginRecord(
            name="caddy",
            version="1.0.0",
            runtime="caddy",
            manifest={"name": "caddy", "version": "1.0.0", "runtime": "caddy"},
        )
    )


@pytest.fixture
def new_vm(plugin: PluginRecord) -> NewVM:
    """Builds an unsaved VM record of the `caddy` plugin, with a MAC no other build has."""
    macs = itertools.count(1)

    def build(name: str, **fields: Any) -> VMRecord:
        mac = next(macs)
        values: dict[str, Any] = {
            "name": name,
            "plugin": plugin.name,
            "runtime": plugin.runtime,
            "status": "created",
            "cpu_cores": 1,
            "memory_mb": 256,
            "mac_address": f"02:56:00:00:{mac // 256:02x}:{mac % 256:02x}",
            "network_mode": "user",
            "hypervisor": "qemu",
            "run_dir": Path("/var/lib/volant/run") / name,
        }
        values.update(fields)
        return VMRecord(**values)

    return build


@pytest.fixture
def make_vm(db: Database, new_vm: NewVM) -> MakeVM:
    """Creates a VM in the store; its first config is `config` or `{"name": <name>}`."""

    def make(name: str, config: dict[str, Any] | None = None, **fields: Any) -> VMRecord:
        return db.vms.create(new_vm(name, **fields), config or {"name": name})

    return make
