"""Deployments through the API without booting: validation, naming, scaling, retries, delete.

Replicas here name a kernel that is not installed, so each boot fails at once, whatever the
host has: enough to see records made, restarted after a pause, and removed.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from support.guest import wait_for
from support.manifests import artifact, manifest
from support.volantd import Volantd

pytestmark = pytest.mark.integration

UNBOOTABLE = {"plugin": "tiny", "kernel": "no-such-kernel"}


@pytest.fixture(scope="module")
def plugin(volantd: Volantd, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("plugin")
    image, checksum = artifact(folder, "vm.cpio", b"an initramfs")
    body = manifest("tiny", str(image), checksum)
    body["resources"] = {"cpu_cores": 2, "memory_mb": 384}
    with volantd.client() as client:
        assert client.post("/api/v1/plugins", json=body).status_code == 201
    return "tiny"


def create(
    client: httpx.Client, name: str, replicas: int = 0, config: dict | None = None
) -> httpx.Response:
    body = {"name": name, "replicas": replicas, "config": config or {"plugin": "tiny"}}
    return client.post("/api/v1/deployments", json=body)


def names(deployment: dict) -> list[str]:
    return [replica["name"] for replica in deployment["replicas"]]


def test_a_deployment_keeps_its_template_with_the_manifest_snapshot(
    volantd: Volantd, plugin: str
) -> None:
    with volantd.client() as client:
        created = create(
            client,
            "tmpl",
            config={"plugin": "tiny", "resources": {"cpu_cores": 1, "memory_mb": 128}},
        )
        assert created.status_code == 201, created.text
        deployment = created.json()
        assert deployment["name"] == "tmpl"
        assert (deployment["desired_replicas"], deployment["ready_replicas"]) == (0, 0)
        assert deployment["replicas"] == [] and deployment["last_error"] is None
        config = deployment["config"]
        assert config["plugin"] == "tiny" and config["manifest"]["name"] == "tiny"
        assert config["resources"] == {"cpu_cores": 1, "memory_mb": 128}
        assert client.get("/api/v1/deployments/tmpl").json() == deployment
        listed = client.get("/api/v1/deployments").json()
        assert "tmpl" in [item["name"] for item in listed]
        assert listed == sorted(listed, key=lambda item: item["name"])


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "Web_1", "replicas": 0, "config": {"plugin": "tiny"}}, 422, "name"),
        ({"name": "x" * 62, "replicas": 1, "config": {"plugin": "tiny"}}, 422, "name"),
        ({"name": "neg", "replicas": -1, "config": {"plugin": "tiny"}}, 422, "replicas"),
        ({"name": "text", "replicas": "2", "config": {"plugin": "tiny"}}, 422, "replicas"),
        ({"name": "noconf", "replicas": 0}, 422, "config"),
        ({"name": "noplugin", "replicas": 0, "config": {}}, 422, "config.plugin"),
        (
            {
                "name": "badres",
                "replicas": 0,
                "config": {"plugin": "tiny", "resources": {"cpu_cores": 0}},
            },
            422,
            "config.resources.cpu_cores",
        ),
        ({"name": "extra", "config": {"plugin": "tiny", "colour": "red"}}, 422, "config.colour"),
        ({"name": "ghost", "replicas": 0, "config": {"plugin": "nope"}}, 404, None),
    ],
)
def test_bad_create_requests_name_the_field(
    volantd: Volantd, plugin: str, body: dict, status: int, field: str | None
) -> None:
    with volantd.client() as client:
        reply = client.post("/api/v1/deployments", json=body)
        assert reply.status_code == status, reply.text
        error = reply.json()
        if field is None:
            assert error["error"] == 'plugin "nope" not found'
        else:
            paths = [issue["path"].removeprefix("body.") for issue in error["issues"]]
            assert field in paths, error
        assert client.get(f"/api/v1/deployments/{body['name']}").status_code == 404
        vms = client.get("/api/v1/vms", params={"q": body["name"]}).json()
        assert not [vm for vm in vms if vm["deployment"] == body["name"]]


def test_unknown_deployments_are_404(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        for reply in (
            client.get("/api/v1/deployments/nobody"),
            client.patch("/api/v1/deployments/nobody", json={"replicas": 1}),
            client.delete("/api/v1/deployments/nobody"),
        ):
            assert reply.status_code == 404, reply.text
            assert reply.json()["error"] == 'deployment "nobody" not found'


def test_scaling_needs_a_count_of_zero_or_more(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        assert create(client, "sc").status_code == 201
        for body in ({}, {"replicas": -3}, {"replicas": 1.5}, {"replicas": None}):
            reply = client.patch("/api/v1/deployments/sc", json=body)
            assert reply.status_code == 422, (body, reply.text)
            assert [issue["path"] for issue in reply.json()["issues"]] == ["body.replicas"]
        assert client.get("/api/v1/deployments/sc").json()["desired_replicas"] == 0
        long = "y" * 61  # y…y-9 is a VM name, y…y-10 is one character too long
        assert create(client, long).status_code == 201
        too_many = client.patch(f"/api/v1/deployments/{long}", json={"replicas": 10})
        assert too_many.status_code == 422
        assert too_many.json()["issues"][0]["path"] == "replicas"
        assert "longer than 63 characters" in too_many.json()["error"]


def test_names_are_unique_and_replica_names_must_be_free(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        assert create(client, "dup").status_code == 201
        again = create(client, "dup")
        assert again.status_code == 409 and "already exists" in again.json()["error"]

        vm = client.post("/api/v1/vms?start=false", json={"name": "taken-2", "plugin": "tiny"})
        assert vm.status_code == 201, vm.text
        clash = create(client, "taken", replicas=2)
        assert clash.status_code == 409, clash.text
        assert "vm 'taken-2' already exists and belongs to no deployment" in clash.json()["error"]
        assert client.get("/api/v1/deployments/taken").status_code == 404
        assert create(client, "taken", replicas=0, config=UNBOOTABLE).status_code == 201
        assert client.patch("/api/v1/deployments/taken", json={"replicas": 2}).status_code == 409
        assert client.get("/api/v1/vms/taken-1").status_code == 404
        assert client.get("/api/v1/vms/taken-2").json()["deployment"] is None
        assert client.delete("/api/v1/deployments/taken").status_code == 204
        assert client.get("/api/v1/vms/taken-2").status_code == 200  # not the deployment's


def test_a_disabled_plugin_makes_no_deployment(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        client.post("/api/v1/plugins/tiny/enabled", json={"enabled": False})
        try:
            refused = create(client, "off")
            assert refused.status_code == 409 and "disabled" in refused.json()["error"]
        finally:
            client.post("/api/v1/plugins/tiny/enabled", json={"enabled": True})
        assert client.get("/api/v1/deployments/off").status_code == 404


def test_replicas_are_vms_named_after_the_deployment(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        assert create(client, "grp", config=UNBOOTABLE).status_code == 201
        scaled = client.patch("/api/v1/deployments/grp", json={"replicas": 3})
        assert scaled.status_code == 200, scaled.text
        assert scaled.json()["desired_replicas"] == 3
        assert names(scaled.json()) == ["grp-1", "grp-2", "grp-3"]
        for name in names(scaled.json()):  # a replica may be between delete and re-create
            vm = wait_for(
                lambda name=name: (r := client.get(f"/api/v1/vms/{name}")).is_success and r.json(),
                10, f"{name} to exist",
            )  # fmt: skip
            assert (vm["deployment"], vm["plugin"], vm["memory_mb"]) == ("grp", "tiny", 384)

        down = client.patch("/api/v1/deployments/grp", json={"replicas": 1})
        assert down.status_code == 200, down.text
        assert names(down.json()) == ["grp-1"]
        assert client.get("/api/v1/vms/grp-2").status_code == 404
        assert client.get("/api/v1/vms/grp-3").status_code == 404
        assert not (volantd.home / "run" / "grp-3").exists()

        assert client.delete("/api/v1/deployments/grp").status_code == 204
        assert client.get("/api/v1/deployments/grp").status_code == 404
        assert client.get("/api/v1/vms", params={"q": "grp-"}).json() == []
        assert "grp" not in [item["name"] for item in client.get("/api/v1/deployments").json()]


def test_concurrent_scaling_ends_with_exactly_the_last_count(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        assert create(client, "con", config=UNBOOTABLE).status_code == 201
    statuses: list[int] = []

    def scale(replicas: int) -> None:
        with volantd.client() as client:
            reply = client.patch("/api/v1/deployments/con", json={"replicas": replicas})
            statuses.append(reply.status_code)

    threads = [threading.Thread(target=scale, args=(count,)) for count in (3, 1, 4, 2, 3, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    with volantd.client() as client:
        deployment = client.get("/api/v1/deployments/con").json()
        wanted = [f"con-{n}" for n in range(1, deployment["desired_replicas"] + 1)]
        assert names(deployment) == wanted
        members = client.get("/api/v1/vms", params={"q": "con-"}).json()
        assert sorted(vm["name"] for vm in members) == wanted
        assert client.delete("/api/v1/deployments/con").status_code == 204


def test_a_replica_that_cannot_boot_is_reported_and_restarted_after_a_pause(
    volantd: Volantd, plugin: str
) -> None:
    with volantd.client() as client:
        assert create(client, "flaky", replicas=1, config=UNBOOTABLE).status_code == 201

        def reported() -> dict | None:
            deployment = client.get("/api/v1/deployments/flaky").json()
            pausing = "next try" in (deployment["last_error"] or "")
            return deployment if pausing and names(deployment) == ["flaky-1"] else None

        waiting = wait_for(reported, 30, "the failing replica to be reported")
        assert "flaky-1: crashed: no kernel named 'no-such-kernel'" in waiting["last_error"]
        assert "(restarted 1 time; next try 2 s after the last)" in waiting["last_error"]
        assert waiting["ready_replicas"] == 0
        assert client.delete("/api/v1/deployments/flaky").status_code == 204
        assert client.get("/api/v1/vms/flaky-1").status_code == 404
    events = [event for event in _events(volantd) if event["name"] == "flaky-1"]
    assert sum(event["type"] == "VM_CREATED" for event in events) == 1  # restarted in place
    boots = [event for event in events if event["message"] == "boot requested"]
    assert 2 <= len(boots) <= 4


def test_deployment_events_are_published(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        create(client, "evt", config=UNBOOTABLE)
        for _ in range(2):  # the second changes nothing and says nothing
            assert client.patch("/api/v1/deployments/evt", json={"replicas": 1}).is_success
        client.delete("/api/v1/deployments/evt")
    mine = [event for event in _events(volantd) if (event["data"] or {}).get("deployment") == "evt"]
    assert [event["type"] for event in mine] == [
        "DEPLOYMENT_CREATED",
        "DEPLOYMENT_SCALED",
        "DEPLOYMENT_DELETED",
    ]


def _events(volantd: Volantd) -> list[dict]:
    """Every stored event so far (the stream is read until it has nothing more for 1 s)."""
    events: list[dict] = []
    with (
        volantd.client(timeout=httpx.Timeout(10, read=1)) as client,
        client.stream("GET", "/api/v1/events/vms", params={"since": 0}) as stream,
    ):
        try:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        except httpx.ReadTimeout:
            pass
    return events
