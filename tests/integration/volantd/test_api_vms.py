"""VM records through the API without booting: validation, listing, config versions, events."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from support.manifests import artifact, manifest
from support.volantd import Volantd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plugin(volantd: Volantd, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("plugin")
    image, checksum = artifact(folder, "vm.cpio", b"an initramfs")
    body = manifest("tiny", str(image), checksum)
    body["resources"] = {"cpu_cores": 2, "memory_mb": 384}
    body["network"] = {"expose": [{"name": "http", "port": 80}]}
    with volantd.client() as client:
        assert client.post("/api/v1/plugins", json=body).status_code == 201
    return "tiny"


def create(client: httpx.Client, name: str, **fields: object) -> httpx.Response:
    return client.post("/api/v1/vms?start=false", json={"name": name, "plugin": "tiny", **fields})


def test_a_recorded_vm_takes_the_manifest_resources(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        created = create(client, "rec-1")
        assert created.status_code == 201, created.text
        vm = created.json()
        assert (vm["status"], vm["cpu_cores"], vm["memory_mb"]) == ("pending", 2, 384)
        assert vm["runtime"] == "tiny" and vm["ports"] == [] and vm["agent_url"] is None
        overridden = create(client, "rec-2", cpu_cores=1, memory_mb=128).json()
        assert (overridden["cpu_cores"], overridden["memory_mb"]) == (1, 128)
        assert client.get("/api/v1/vms/rec-1").json()["mac_address"] == vm["mac_address"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "Web_1", "plugin": "tiny"}, 422, "is not a DNS label"),
        ({"name": "x" * 64, "plugin": "tiny"}, 422, "is not a DNS label"),
        ({"name": "ok-name", "plugin": "nope"}, 404, 'plugin "nope" not found'),
        ({"name": "ok-name"}, 400, "plugin: name the plugin"),
        ({"name": "ok-name", "plugin": "tiny", "cpu_cores": 0}, 422, "cpu_cores"),
        ({"name": "ok-name", "plugin": "tiny", "runtime": "other"}, 422, "does not match"),
        ({"plugin": "tiny"}, 422, "name"),
    ],
)
def test_bad_create_requests_are_named(
    volantd: Volantd, plugin: str, body: dict, status: int, message: str
) -> None:
    with volantd.client() as client:
        reply = client.post("/api/v1/vms?start=false", json=body)
        assert reply.status_code == status, reply.text
        assert message in reply.json()["error"]
        assert client.get("/api/v1/vms/ok-name").status_code == 404


def test_a_disabled_plugin_makes_no_vms(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        client.post("/api/v1/plugins/tiny/enabled", json={"enabled": False})
        try:
            refused = create(client, "dis-1")
            assert refused.status_code == 409 and "disabled" in refused.json()["error"]
        finally:
            client.post("/api/v1/plugins/tiny/enabled", json={"enabled": True})


def test_concurrent_creates_of_one_name_exactly_one_wins(volantd: Volantd, plugin: str) -> None:
    statuses: list[int] = []

    def attempt() -> None:
        with volantd.client() as client:
            statuses.append(create(client, "race-1").status_code)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409, 409, 409]


def test_list_filters_sorts_and_pages(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        for name in ("page-c", "page-a", "page-b"):
            create(client, name)
        everything = client.get("/api/v1/vms", params={"q": "page-", "sort": "name"})
        assert [vm["name"] for vm in everything.json()] == ["page-a", "page-b", "page-c"]
        assert everything.headers["x-total-count"] == "3"
        page = client.get(
            "/api/v1/vms",
            params={"q": "PAGE", "sort": "name", "order": "desc", "limit": 2, "offset": 1},
        )
        assert [vm["name"] for vm in page.json()] == ["page-b", "page-a"]
        assert page.headers["x-total-count"] == "3"
        by_status = client.get("/api/v1/vms", params={"status": "running,crashed", "q": "page-"})
        assert by_status.json() == [] and by_status.headers["x-total-count"] == "0"
        pending = client.get("/api/v1/vms", params={"status": "PENDING", "plugin": "tiny"})
        assert {"page-a", "page-b", "page-c"} <= {vm["name"] for vm in pending.json()}
        assert client.get("/api/v1/vms", params={"limit": -1}).status_code == 422


def test_config_is_versioned_and_patches_apply_to_the_record(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        create(client, "cfg-1")
        first = client.get("/api/v1/vms/cfg-1/config").json()
        assert first["version"] == 1 and first["config"]["plugin"] == "tiny"
        assert first["config"]["manifest"]["name"] == "tiny"  # a snapshot of the manifest
        patched = client.patch(
            "/api/v1/vms/cfg-1/config",
            json={"resources": {"memory_mb": 512}, "kernel_cmdline": "loglevel=4"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["version"] == 2
        assert patched.json()["config"]["resources"] == {"cpu_cores": 2, "memory_mb": 512}
        vm = client.get("/api/v1/vms/cfg-1").json()
        assert (vm["memory_mb"], vm["kernel_cmdline"], vm["config_version"]) == (
            512,
            "loglevel=4",
            2,
        )
        history = client.get("/api/v1/vms/cfg-1/config/history").json()
        assert [entry["version"] for entry in history] == [2, 1]
        assert len(client.get("/api/v1/vms/cfg-1/config/history?limit=1").json()) == 1
        bad = client.patch("/api/v1/vms/cfg-1/config", json={"resources": {"cpu_cores": 0}})
        assert bad.status_code == 422 and "resources.cpu_cores" in bad.text
        assert client.get("/api/v1/vms/cfg-1/config").json()["version"] == 2


def test_delete_removes_the_record_and_its_run_directory(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        create(client, "del-1")
        assert client.delete("/api/v1/vms/del-1").status_code == 204
        assert client.get("/api/v1/vms/del-1").status_code == 404
        assert client.delete("/api/v1/vms/del-1").status_code == 404
        assert not (volantd.home / "run" / "del-1").exists()
        removal = client.delete("/api/v1/plugins/tiny")
        assert removal.status_code == 409 and "is used by" in removal.json()["error"]
        assert client.get("/api/v1/plugins/tiny").status_code == 200


def test_events_replay_from_an_id_and_follow(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        create(client, "evt-1")
        client.delete("/api/v1/vms/evt-1")
        with client.stream(
            "GET", "/api/v1/events/vms", params={"since": 0, "vm": "evt-1"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            seen: list[dict] = []
            ids: list[int] = []
            for line in stream.iter_lines():
                if line.startswith("id:"):
                    ids.append(int(line[3:]))
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                if len(seen) == 2:
                    break
    assert [event["type"] for event in seen] == ["VM_CREATED", "VM_DELETED"]
    assert ids == sorted(ids) and all(event["name"] == "evt-1" for event in seen)
    with (
        volantd.client() as client,
        client.stream(
            "GET",
            "/api/v1/events/vms",
            headers={"Last-Event-ID": str(ids[0])},
            params={"vm": "evt-1"},
        ) as resumed,
    ):
        for line in resumed.iter_lines():
            if line.startswith("data:"):
                assert json.loads(line[5:])["type"] == "VM_DELETED"
                break


def test_system_status_and_summary_count_vms_and_plugins(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        create(client, "sum-1")
        vms = client.get("/api/v1/vms").json()
        status = client.get("/api/v1/system/status").json()
        assert status["status"] == "ok" and status["vm_count"] == len(vms)
        assert 0 <= status["mem_percent"] <= 100
        summary = client.get("/api/v1/system/summary").json()
        assert summary["total_vms"] == len(vms)
        assert summary["by_status"]["pending"] == sum(vm["status"] == "pending" for vm in vms)
        assert summary["by_runtime"]["tiny"] == len(vms)
        assert {"name": "tiny", "version": "1.0.0", "enabled": True} in summary["plugins"]
        assert summary["enabled_plugins"] <= summary["total_plugins"]


def test_upstreams_command_endpoint(volantd: Volantd, plugin: str) -> None:
    with volantd.client() as client:
        create(client, "mcp-1")
        listed = client.post("/api/v1/mcp", json={"command": "volant.vms.list"}).json()
        assert listed["error"] is None
        assert {"name": "mcp-1", "status": "pending"}.items() <= next(
            vm for vm in listed["result"] if vm["name"] == "mcp-1"
        ).items()
        unknown = client.post("/api/v1/mcp", json={"command": "volant.nope"})
        assert (
            unknown.status_code == 200 and unknown.json()["error"] == "unknown command: volant.nope"
        )
        missing = client.post(
            "/api/v1/mcp", json={"command": "volant.vms.create", "params": {"name": "x"}}
        ).json()
        assert "name and plugin are required" in missing["error"]
        taken = client.post(
            "/api/v1/mcp",
            json={"command": "volant.vms.create", "params": {"name": "mcp-1", "plugin": "tiny"}},
        ).json()
        assert 'vm "mcp-1" already exists' in taken["error"]
        capabilities = client.post(
            "/api/v1/mcp", json={"command": "volant.system.get_capabilities"}
        )
        assert len(capabilities.json()["result"]["commands"]) == 3
        assert client.post("/api/v1/mcp", json=[1]).status_code == 422


def test_forced_plugin_removal_deletes_its_vms_first(volantd: Volantd, tmp_path: Path) -> None:
    image, checksum = artifact(tmp_path, "doomed.cpio", b"short-lived")
    with volantd.client() as client:
        client.post("/api/v1/plugins", json=manifest("doomed", str(image), checksum))
        for name in ("doomed-1", "doomed-2"):
            client.post("/api/v1/vms?start=false", json={"name": name, "plugin": "doomed"})
        assert client.delete("/api/v1/plugins/doomed").status_code == 409
        assert client.delete("/api/v1/plugins/doomed?force=true").status_code == 204
        assert client.get("/api/v1/vms/doomed-1").status_code == 404
        assert client.get("/api/v1/plugins/doomed").status_code == 404
