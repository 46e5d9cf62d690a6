"""`volar deployments` and `volar events` against a real volantd (replica counts that boot
nothing; booting replicas is in tests/vm/test_volar_boot.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.manifests import artifact, manifest
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.integration

VOLAR = Path(sys.executable).parent / "volar"


@pytest.fixture(scope="module")
def volantd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    folder = tmp_path_factory.mktemp("plugin")
    _, checksum = artifact(folder, "dep.cpio", b"an image")
    (folder / "plugin.json").write_text(json.dumps(manifest("dep", "dep.cpio", checksum)))
    with running_volantd(tmp_path_factory.mktemp("volar") / "home") as daemon:
        installed = volar(daemon.url, "plugins", "install", str(folder / "plugin.json"))
        assert installed.returncode == 0, installed.stderr
        yield daemon


def volar(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOLAR), "--api", url, *args], capture_output=True, text=True, timeout=60
    )


def test_deployment_life_cycle_without_replicas(volantd: Volantd, tmp_path: Path) -> None:
    config = tmp_path / "web.yaml"
    config.write_text("plugin: dep\nresources:\n  cpu_cores: 1\n")
    created = volar(volantd.url, "deployments", "create", "web", "--config", str(config),
                    "--replicas", "0", "--memory", "256")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.split()[:2] == ["NAME", "web"]
    listed = json.loads(volar(volantd.url, "deployments", "list", "-o", "json").stdout)
    assert [(d["name"], d["desired_replicas"]) for d in listed] == [("web", 0)]
    got = json.loads(volar(volantd.url, "deployments", "get", "web", "-o", "json").stdout)
    assert got["config"]["plugin"] == "dep"
    assert got["config"]["resources"] == {"cpu_cores": 1, "memory_mb": 256}
    table = volar(volantd.url, "deployments", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "READY", "ERROR"]
    assert table[1].split()[:3] == ["web", "0", "0"]
    scaled = volar(volantd.url, "deployments", "scale", "web", "0", "--wait", "-o", "yaml")
    assert scaled.returncode == 0 and "0/0 replicas ready" in scaled.stderr
    taken = volar(volantd.url, "deployments", "create", "web", "--plugin", "dep", "--replicas", "0")
    assert taken.returncode == 1 and taken.stderr.count("\n") == 1 and "web" in taken.stderr
    deleted = volar(volantd.url, "deployments", "delete", "web")
    assert deleted.stdout.strip() == "deployment web deleted"
    gone = volar(volantd.url, "deployments", "get", "web")
    assert gone.returncode == 1 and "web" in gone.stderr and "404" in gone.stderr


def test_deployment_errors(volantd: Volantd) -> None:
    unknown = volar(volantd.url, "deployments", "create", "x", "--plugin", "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stderr
    no_plugin = volar(volantd.url, "deployments", "create", "x")
    assert no_plugin.returncode == 2 and "--plugin" in no_plugin.stderr
    negative = volar(volantd.url, "deployments", "scale", "x", "-1")
    assert negative.returncode == 2
    missing = volar(volantd.url, "deployments", "scale", "x", "2")
    assert missing.returncode == 1 and '"x"' in missing.stderr


def test_events_follow_and_replay(volantd: Volantd) -> None:
    follower = subprocess.Popen(
        [str(VOLAR), "--api", volantd.url, "events", "--vm", "ev-1", "--since", "0", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert (
            volar(volantd.url, "vms", "create", "ev-2", "--plugin", "dep", "--no-start").returncode
            == 0
        )
        assert (
            volar(volantd.url, "vms", "create", "ev-1", "--plugin", "dep", "--no-start").returncode
            == 0
        )
        assert volar(volantd.url, "vms", "delete", "ev-1").returncode == 0
        assert follower.stdout is not None
        seen = [json.loads(follower.stdout.readline()) for _ in range(2)]
    finally:
        follower.terminate()
        follower.wait(10)
    assert [(e["type"], e["name"]) for e in seen] == [
        ("VM_CREATED", "ev-1"),
        ("VM_DELETED", "ev-1"),
    ]
    assert seen[0]["id"] < seen[1]["id"]
    replay = subprocess.Popen(
        [str(VOLAR), "--api", volantd.url, "events", "--since", str(seen[0]["id"] - 1)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert replay.stdout is not None
        line = replay.stdout.readline().split()
    finally:
        replay.terminate()
        replay.wait(10)
    assert line[1:4] == [str(seen[0]["id"]), "VM_CREATED", "ev-1"]
