"""Deployments: a replica count and a config template, with member VMs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from volantd.store import (
    ConflictError,
    Database,
    DeploymentRecord,
    NotFoundError,
    StoreError,
    VMRecord,
)

TEMPLATE = {"plugin": "caddy", "resources": {"cpu_cores": 1, "memory_mb": 256}}

MakeVM = Callable[..., VMRecord]


def web(replicas: int = 2) -> DeploymentRecord:
    return DeploymentRecord(name="web", desired_replicas=replicas, config=TEMPLATE)


def test_add_get_find_and_list(db: Database) -> None:
    added = db.deployments.add(web())
    db.deployments.add(DeploymentRecord(name="api", desired_replicas=0, config={}))
    assert db.deployments.get("web") == added
    assert (added.desired_replicas, added.config) == (2, TEMPLATE)
    assert db.deployments.find("nope") is None
    assert [record.name for record in db.deployments.list()] == ["api", "web"]


def test_a_taken_name_is_a_conflict_and_unknown_names_are_not_found(db: Database) -> None:
    db.deployments.add(web())
    with pytest.raises(ConflictError, match=r'^deployment "web" already exists$'):
        db.deployments.add(web(5))
    for call in (
        lambda: db.deployments.get("nope"),
        lambda: db.deployments.set_replicas("nope", 1),
        lambda: db.deployments.update_config("nope", {}),
        lambda: db.deployments.remove("nope"),
        lambda: db.deployments.members("nope"),
    ):
        with pytest.raises(NotFoundError, match=r'^deployment "nope" not found$'):
            call()


def test_scaling_and_reconfiguring(db: Database) -> None:
    added = db.deployments.add(web())
    scaled = db.deployments.set_replicas("web", 5)
    assert scaled.desired_replicas == 5
    assert scaled.updated_at > added.updated_at and scaled.created_at == added.created_at
    reconfigured = db.deployments.update_config("web", {"plugin": "caddy", "memory_mb": 512})
    assert db.deployments.get("web") == reconfigured
    assert reconfigured.config == {"plugin": "caddy", "memory_mb": 512}
    assert reconfigured.desired_replicas == 5


def test_negative_replicas_are_refused(db: Database) -> None:
    with pytest.raises(StoreError, match=r"desired replicas must be >= 0, got -1"):
        db.deployments.add(web(-1))
    db.deployments.add(web())
    with pytest.raises(StoreError, match=r"desired replicas must be >= 0, got -3"):
        db.deployments.set_replicas("web", -3)
    assert db.deployments.get("web").desired_replicas == 2


def test_members_are_the_deployments_vms_by_name(db: Database, make_vm: MakeVM) -> None:
    db.deployments.add(web())
    make_vm("web-2", deployment="web")
    make_vm("web-1", deployment="web")
    make_vm("web-10", deployment="web")
    make_vm("loner")
    assert [vm.name for vm in db.deployments.members("web")] == ["web-1", "web-10", "web-2"]


def test_removing_a_deployment_keeps_its_vms_standalone(db: Database, make_vm: MakeVM) -> None:
    db.deployments.add(web())
    make_vm("web-1", deployment="web")
    db.deployments.remove("web")
    assert db.deployments.find("web") is None
    assert db.vms.get("web-1").deployment is None
