"""VMs: create with config version 1, filtered listing, updates, config history, delete."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import pytest
import sqlalchemy as sa

from volantd.store import (
    ConflictError,
    Database,
    DeploymentRecord,
    NotFoundError,
    StoreError,
    VMRecord,
)

MakeVM = Callable[..., VMRecord]
NewVM = Callable[..., VMRecord]


def names(records: list[VMRecord]) -> list[str]:
    return [record.name for record in records]


def test_create_stores_the_vm_and_its_first_config(db: Database, new_vm: NewVM) -> None:
    config = {"plugin": "caddy", "resources": {"cpu_cores": 1, "memory_mb": 256}}
    created = db.vms.create(new_vm("web-1", ip_address="10.0.0.2"), config)
    assert created.id > 0
    assert created.config_version == 1
    assert created.created_at.tzinfo is UTC and created.created_at == created.updated_at
    assert created.run_dir == Path("/var/lib/volant/run/web-1")
    assert db.vms.get("web-1") == created
    current = db.vms.config("web-1")
    assert (current.vm_name, current.version, current.config) == ("web-1", 1, config)


def test_a_taken_name_or_mac_is_a_conflict(db: Database, new_vm: NewVM, make_vm: MakeVM) -> None:
    first = make_vm("web-1")
    with pytest.raises(ConflictError, match=r'^vm "web-1" already exists$'):
        db.vms.create(new_vm("web-1"), {})
    with pytest.raises(
        ConflictError, match=f'^MAC address {first.mac_address} is already used by vm "web-1"$'
    ):
        db.vms.create(new_vm("web-2", mac_address=first.mac_address), {})
    assert names(db.vms.list()[0]) == ["web-1"]


def test_unknown_plugin_or_deployment_leaves_nothing_behind(db: Database, new_vm: NewVM) -> None:
    with pytest.raises(NotFoundError, match=r'^plugin "nginx" not found$'):
        db.vms.create(new_vm("web-1", plugin="nginx"), {})
    with pytest.raises(NotFoundError, match=r'^deployment "web" not found$'):
        db.vms.create(new_vm("web-1", deployment="web"), {})
    with pytest.raises(StoreError, match=r'^vm "web-1": cpu_cores must be > 0, got 0$'):
        db.vms.create(new_vm("web-1", cpu_cores=0), {})
    assert db.vms.list() == ([], 0)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM vm_configs")).scalar() == 0


def test_unknown_vms_are_not_found(db: Database) -> None:
    assert db.vms.find("ghost") is None
    for call in (
        lambda: db.vms.get("ghost"),
        lambda: db.vms.update("ghost", status="running"),
        lambda: db.vms.delete("ghost"),
        lambda: db.vms.config("ghost"),
        lambda: db.vms.config_history("ghost"),
        lambda: db.vms.put_config("ghost", {}),
    ):
        with pytest.raises(NotFoundError, match=r'^vm "ghost" not found$'):
            call()


@pytest.fixture
def fleet(make_vm: MakeVM) -> list[VMRecord]:
    return [
        make_vm("web-1", status="running", runtime="caddy", ip_address="10.0.0.2"),
        make_vm("db-1", status="STOPPED", runtime="Postgres", ip_address="10.0.0.3"),
        make_vm("web-2", status="crashed", runtime="caddy", ip_address="10.0.0.10"),
        make_vm("cache_1", status="running", runtime="redis"),
    ]


def test_list_defaults_to_creation_order_with_the_total(
    db: Database, fleet: list[VMRecord]
) -> None:
    records, total = db.vms.list()
    assert names(records) == ["web-1", "db-1", "web-2", "cache_1"]
    assert total == 4


def test_list_filters_ignore_case(db: Database, fleet: list[VMRecord]) -> None:
    assert names(db.vms.list(status=["Running", "stopped"])[0]) == ["web-1", "db-1", "cache_1"]
    assert names(db.vms.list(runtime="POSTGRES")[0]) == ["db-1"]
    assert names(db.vms.list(plugin="Caddy")[0]) == ["web-1", "db-1", "web-2", "cache_1"]
    assert names(db.vms.list(plugin="nginx")[0]) == []
    assert names(db.vms.list(q="WEB")[0]) == ["web-1", "web-2"]
    assert names(db.vms.list(q="10.0.0.1")[0]) == ["web-2"]  # IP address
    assert names(db.vms.list(q="gres")[0]) == ["db-1"]  # runtime
    assert db.vms.list(status=["running"], q="web") == ([fleet[0]], 1)


def test_list_search_takes_wildcards_literally(db: Database, fleet: list[VMRecord]) -> None:
    assert names(db.vms.list(q="_")[0]) == ["cache_1"]
    assert names(db.vms.list(q="%")[0]) == []


def test_list_sorts_by_whitelisted_columns_only(db: Database, fleet: list[VMRecord]) -> None:
    assert names(db.vms.list(sort="name")[0]) == ["cache_1", "db-1", "web-1", "web-2"]
    assert names(db.vms.list(sort="name", order="DESC")[0]) == [
        "web-2",
        "web-1",
        "db-1",
        "cache_1",
    ]
    assert names(db.vms.list(sort="runtime")[0]) == ["db-1", "web-1", "web-2", "cache_1"]
    by_created = names(db.vms.list(order="desc")[0])
    assert by_created == ["cache_1", "web-2", "db-1", "web-1"]
    assert names(db.vms.list(sort="pid; DROP TABLE vms", order="desc")[0]) == by_created


def test_list_pages_and_still_counts_everything(db: Database, fleet: list[VMRecord]) -> None:
    assert [(names(page), total) for page, total in [db.vms.list(limit=2, offset=1)]] == [
        (["db-1", "web-2"], 4)
    ]
    assert db.vms.list(offset=3) == ([fleet[3]], 4)
    assert db.vms.list(limit=0) == ([], 4)
    assert db.vms.list(status=["running"], limit=1, offset=1) == ([fleet[3]], 2)
    with pytest.raises(ValueError, match=r"limit"):
        db.vms.list(limit=-1)


def test_update_changes_fields_and_moves_updated_at(db: Database, make_vm: MakeVM) -> None:
    created = make_vm("web-1")
    boot = {"api_received": 0.0, "vmm_spawned": 0.012, "agent_ready": 0.9}
    updated = db.vms.update("web-1", status="running", pid=4242, boot=boot, run_dir=Path("/r"))
    assert (updated.status, updated.pid, updated.boot, updated.run_dir) == (
        "running",
        4242,
        boot,
        Path("/r"),
    )
    assert updated.created_at == created.created_at
    assert updated.updated_at > created.updated_at
    assert db.vms.get("web-1") == updated
    cleared = db.vms.update("web-1", pid=None, boot=None)
    assert (cleared.pid, cleared.boot) == (None, None)


def test_update_refuses_unknown_and_fixed_fields(db: Database, make_vm: MakeVM) -> None:
    make_vm("web-1")
    with pytest.raises(TypeError, match=r"cannot set colour"):
        db.vms.update("web-1", colour="blue")
    for fixed in ("name", "id", "config_version", "created_at"):
        with pytest.raises(TypeError, match=f"cannot set {fixed}"):
            db.vms.update("web-1", **{fixed: 1})


def test_update_refuses_a_mac_or_deployment_that_does_not_fit(
    db: Database, make_vm: MakeVM
) -> None:
    other = make_vm("web-1")
    make_vm("web-2")
    with pytest.raises(ConflictError, match=r'already used by vm "web-1"'):
        db.vms.update("web-2", mac_address=other.mac_address)
    with pytest.raises(NotFoundError, match=r'^deployment "web" not found$'):
        db.vms.update("web-2", deployment="web")
    db.deployments.add(DeploymentRecord(name="web", desired_replicas=1, config={}))
    assert db.vms.update("web-2", deployment="web").deployment == "web"


def test_put_config_appends_versions_and_history_is_newest_first(
    db: Database, make_vm: MakeVM
) -> None:
    make_vm("web-1", config={"memory_mb": 256})
    second = db.vms.put_config("web-1", {"memory_mb": 512})
    third = db.vms.put_config("web-1", {"memory_mb": 1024})
    assert (second.version, third.version) == (2, 3)
    assert db.vms.config("web-1") == third
    assert db.vms.get("web-1").config_version == 3
    history = db.vms.config_history("web-1")
    assert [(entry.version, entry.config["memory_mb"]) for entry in history] == [
        (3, 1024),
        (2, 512),
        (1, 256),
    ]
    assert history[0] == third
    assert [entry.version for entry in db.vms.config_history("web-1", limit=2)] == [3, 2]


def test_configs_of_one_vm_do_not_leak_into_another(db: Database, make_vm: MakeVM) -> None:
    make_vm("web-1", config={"n": 1})
    make_vm("web-2", config={"n": 2})
    db.vms.put_config("web-1", {"n": 11})
    assert [entry.config for entry in db.vms.config_history("web-2")] == [{"n": 2}]
    assert db.vms.config("web-2").version == 1


def test_delete_forgets_the_vm_its_configs_and_its_leases(db: Database, make_vm: MakeVM) -> None:
    make_vm("web-1")
    make_vm("web-2")
    db.vms.put_config("web-1", {"v": 2})
    db.ports.lease("web-1", "agent", range(20000, 20010))
    db.ports.lease("web-2", "agent", range(20000, 20010))
    db.ips.seed("vbr0", ["10.0.0.2", "10.0.0.3"])
    address = db.ips.lease("vbr0", "web-1")

    db.vms.delete("web-1")

    assert db.vms.find("web-1") is None
    assert db.ports.leases("web-1") == []
    assert [lease.vm_name for lease in db.ports.all()] == ["web-2"]
    assert db.ips.leases("web-1") == []
    assert db.ips.lease("vbr0", "web-3") == address  # the address is free again
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM vm_configs")).scalar() == 1
    recreated = make_vm("web-1", config={"fresh": True})
    assert recreated.id > 2  # ids are never reused
    assert [entry.config for entry in db.vms.config_history("web-1")] == [{"fresh": True}]
