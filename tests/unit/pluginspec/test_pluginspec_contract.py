"""The guest boot contract (vm.json): plain JSON with every key present."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pluginspec import (
    CONTRACT_VERSION,
    GuestBoot,
    GuestNetwork,
    GuestWorkload,
    SpecError,
    VMContract,
    VMIdentity,
    load_manifest,
    load_vm_contract,
    parse_vm_contract,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec"
VM_JSON = json.loads((FIXTURES / "vm" / "vm.json").read_text())


def doc(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(VM_JSON)
    out.update(changes)
    return out


def issues(data: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_vm_contract(data)
    return {issue.path: issue.message for issue in info.value.issues}


def test_fixture_loads_and_is_written_back_as_plain_json() -> None:
    contract = load_vm_contract(FIXTURES / "vm" / "vm.json")
    assert contract.contract == CONTRACT_VERSION == 1
    written = json.loads(contract.to_json())
    assert written["vm"] == {"name": "web", "id": "7"}
    assert written["agent"] == {"tcp_port": 8080, "vsock_port": None}
    assert written["boot"] == {"strategy": "initramfs", "root_device": None, "root_fstype": None}
    assert written["workload"]["restart"]["policy"] == "on-failure"
    assert written["modules"][0].endswith("virtio_mmio.ko")
    assert written["boot_epoch_ns"] == 1732620000123456789
    assert parse_vm_contract(contract.to_json()) == contract


def test_every_key_is_written_even_when_unset() -> None:
    schema_file = Path(__file__).resolve().parents[3] / "docs/schemas/vm-json-contract-1.json"
    schema = json.loads(schema_file.read_text())
    written = json.loads(load_vm_contract(FIXTURES / "vm" / "vm.json").to_json())
    assert set(written) == set(schema["required"])
    sections = {
        "vm": "VMIdentity",
        "workload": "GuestWorkload",
        "network": "GuestNetwork",
        "agent": "AgentListen",
        "boot": "GuestBoot",
    }
    for key, definition in sections.items():
        assert set(written[key]) == set(schema["$defs"][definition]["required"])


def test_volantd_builds_a_contract_from_a_manifest() -> None:
    manifest = load_manifest(FIXTURES / "manifests" / "caddy.json")
    contract = VMContract(
        vm=VMIdentity(name="web", id="42"),
        hostname="web",
        manifest=manifest,
        workload=GuestWorkload.from_manifest(manifest),
        network=GuestNetwork(
            mode="bridged",
            mac="02:AA:BB:CC:DD:EE",
            address="192.168.127.10",
            prefix=24,
            gateway="192.168.127.1",
            dns=["192.168.127.1"],
        ),
        boot=GuestBoot(strategy="initramfs"),
        modules=["/lib/modules/virtio_net.ko"],
        boot_epoch_ns=1,
    )
    written = json.loads(contract.to_json())
    assert written["workload"]["entrypoint"] == [
        "/usr/bin/caddy",
        "run",
        "--config",
        "/etc/caddy/Caddyfile",
    ]
    assert written["workload"]["health_check"]["timeout_ms"] == 10000
    assert written["workload"]["workdir"] == "/"
    assert written["network"]["mac"] == "02:aa:bb:cc:dd:ee"
    assert written["manifest"]["name"] == "caddy"
    assert written["console_shell"] is False
    assert (
        GuestWorkload.from_manifest(
            load_manifest(FIXTURES / "manifests" / "seed-manifest-wiring.json")
        )
        is None
    )


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ({"mode": "bridged", "mac": "02:00:00:00:00:01"}, {"network.address"}),
        (
            {"mode": "dhcp", "mac": "02:00:00:00:00:01", "address": "10.0.0.2", "prefix": 24},
            {"network.address"},
        ),
        ({"mode": "user", "mac": "02:00:00:00:00:01", "address": "10.0.2.15"}, {"network.prefix"}),
        ({"mode": "user", "mac": None}, {"network.mac"}),
        ({"mode": "user", "mac": "not-a-mac"}, {"network.mac"}),
        ({"mode": "user", "mac": "02:00:00:00:00:01", "dns": ["8.8.8.999"]}, {"network.dns[0]"}),
    ],
)
def test_network_rules(network: dict[str, Any], expected: set[str]) -> None:
    assert set(issues(doc(network=network))) == expected


def test_network_forms_that_are_valid() -> None:
    isolated = parse_vm_contract(doc(network={"mode": "vsock", "mac": None}))
    assert isolated.network.mode == "isolated" and isolated.network.mac is None
    dhcp = parse_vm_contract(doc(network={"mode": "dhcp", "mac": "02:00:00:00:00:01"}))
    assert dhcp.network.address is None


def test_boot_rules() -> None:
    assert issues(doc(boot={"strategy": "rootfs"})) == {
        "boot.root_device": "is required for the rootfs strategy",
        "boot.root_fstype": "is required for the rootfs strategy",
    }
    assert issues(doc(boot={"strategy": "initramfs", "root_device": "/dev/vda"})) == {
        "boot.root_device": "must be null for the initramfs strategy"
    }
    rootfs = parse_vm_contract(
        doc(boot={"strategy": "rootfs", "root_device": "/dev/vda", "root_fstype": "squashfs"})
    )
    assert rootfs.boot.root_fstype == "squashfs"


def test_modules_are_absolute_unique_and_ordered() -> None:
    assert set(issues(doc(modules=["virtio.ko"]))) == {"modules[0]"}
    assert issues(doc(modules=["/a.ko", "/b.ko", "/a.ko"])) == {"modules": "lists '/a.ko' twice"}
    order = ["/z.ko", "/a.ko", "/m.ko"]
    assert parse_vm_contract(doc(modules=order)).modules == order


def test_other_contract_versions_are_rejected() -> None:
    assert issues(doc(contract=2)) == {
        "contract": "unsupported contract version 2: this reader understands 1"
    }
    assert "contract" in issues(doc(contract=True))


def test_identity_and_timing_rules() -> None:
    found = issues(doc(hostname="web_1", vm={"name": "a/b", "id": ""}, boot_epoch_ns=-1))
    assert set(found) == {"hostname", "vm.name", "vm.id", "boot_epoch_ns"}
    assert set(issues(doc(agent={"tcp_port": 0, "vsock_port": 1024}))) == {"agent.tcp_port"}
