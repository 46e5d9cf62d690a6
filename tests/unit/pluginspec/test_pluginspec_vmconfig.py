"""VM config: inheritance from the manifest snapshot, and PATCH semantics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pluginspec import (
    SpecError,
    VMConfig,
    apply_patch,
    load_vm_config,
    parse_vm_config,
    parse_vm_config_patch,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec"
CONFIG = json.loads((FIXTURES / "vm" / "caddy-vm-config.json").read_text())


def config(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(CONFIG)
    doc.update(changes)
    return doc


def issues(data: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_vm_config(data)
    return {issue.path: issue.message for issue in info.value.issues}


def patched(patch: dict[str, Any], base: VMConfig | None = None) -> VMConfig:
    return apply_patch(base or parse_vm_config(CONFIG), parse_vm_config_patch(patch))


def patch_issues(patch: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        patched(patch)
    return {issue.path: issue.message for issue in info.value.issues}


def test_fixture_config_loads_and_round_trips() -> None:
    vm = load_vm_config(FIXTURES / "vm" / "caddy-vm-config.json")
    assert vm.plugin == vm.runtime == "caddy"
    assert vm.api is not None and (vm.api.host, vm.api.port) == ("192.168.127.1", 7777)
    assert vm.metadata == {"owner": "web-team", "tier": 1}
    assert vm.kernel_cmdline == "loglevel=4"
    assert parse_vm_config(vm.model_dump(mode="json")) == vm


def test_values_left_out_come_from_the_manifest() -> None:
    doc = config()
    for key in ("runtime", "resources", "api", "expose", "metadata"):
        del doc[key]
    doc["manifest"]["resources"] = {"cpu_cores": 3, "memory_mb": 768}
    vm = parse_vm_config(doc)
    assert vm.runtime == "caddy"
    assert (vm.resources.cpu_cores, vm.resources.memory_mb) == (3, 768)
    assert vm.boot_artifact() == vm.manifest.initramfs
    network = vm.effective_network()
    assert network.mode == "user"
    assert [(e.port, e.host_port) for e in network.expose] == [(80, 8080)]


def test_expose_and_network_overrides() -> None:
    vm = parse_vm_config(CONFIG)  # top-level expose replaces the manifest's
    assert [(e.port, e.host_port) for e in vm.effective_network().expose] == [(80, 18080)]
    nothing = parse_vm_config(config(expose=[]))
    assert nothing.effective_network().expose == []
    bridged = parse_vm_config(config(expose=None, network={"mode": "bridged"}))
    network = bridged.effective_network()
    assert network.mode == "bridged"
    assert [(e.port, e.host_port) for e in network.expose] == [(80, 8080)]


def test_boot_media_override() -> None:
    vm = parse_vm_config(config(rootfs={"url": "/srv/web.img", "format": "ext4"}))
    artifact = vm.boot_artifact()
    assert artifact is vm.rootfs and vm.rootfs is not None and vm.rootfs.fstype == "ext4"
    both = config(rootfs={"url": "/srv/web.img"}, initramfs={"url": "/srv/web.cpio"})
    assert issues(both) == {"rootfs": "give either initramfs or rootfs, not both"}


def test_cloud_init_merge() -> None:
    doc = config(cloud_init={"user_data": {"content": "#cloud-config\nb: 2\n"}})
    doc["manifest"]["cloud_init"] = {
        "datasource": "NoCloud",
        "user_data": {"content": "#cloud-config\na: 1\n"},
        "meta_data": {"content": "instance-id: x\n"},
    }
    merged = parse_vm_config(doc).effective_cloud_init()
    assert merged is not None and merged.user_data is not None and merged.meta_data is not None
    assert merged.user_data.content == "#cloud-config\nb: 2\n"
    assert merged.meta_data.content == "instance-id: x\n"
    assert merged.datasource == "NoCloud"


def test_consistency_rules() -> None:
    found = issues(config(hypervisor="firecracker", api={"port": "http"}))
    assert found == {
        "hypervisor": "invalid value 'firecracker', must be one of: qemu, cloud-hypervisor",
        "api.port": "must be a port number 1-65535 (got 'http')",
    }
    found = issues(config(plugin="nginx", runtime="other", kernel="k1", kernel_override="/k"))
    assert found == {
        "plugin": "'nginx' does not match the manifest's name 'caddy'",
        "runtime": "'other' does not match the manifest's runtime 'caddy'",
        "kernel_override": "give either kernel (a registered kernel) or kernel_override "
        "(a path), not both",
    }
    ch = parse_vm_config(config(hypervisor="Cloud-Hypervisor", kernel="debian-6-1"))
    assert (ch.hypervisor, ch.kernel) == ("cloud-hypervisor", "debian-6-1")


def test_missing_manifest_and_bad_nested_manifest_are_reported_with_paths() -> None:
    doc = config()
    del doc["manifest"]
    assert issues(doc) == {"manifest": "is required"}
    bad = config()
    bad["manifest"]["resources"] = {"cpu_cores": 0}
    assert issues(bad) == {"manifest.resources.cpu_cores": "must be >= 1 (got 0)"}


def test_api_port_accepts_upstream_strings() -> None:
    assert parse_vm_config(config(api={"host": "h", "port": "0"})).api.port is None  # type: ignore[union-attr]
    assert parse_vm_config(config(api={"port": 7777})).api.port == 7777  # type: ignore[union-attr]


def test_upstream_expose_mode_is_accepted_and_dropped() -> None:
    vm = parse_vm_config(CONFIG)
    assert vm.expose is not None
    assert "mode" not in vm.model_dump(mode="json")["expose"][0]


# --- patches -------------------------------------------------------------------------------


def test_absent_fields_are_unchanged() -> None:
    base = parse_vm_config(CONFIG)
    assert patched({}, base) == base
    result = patched({"resources": {"cpu_cores": 4}}, base)
    assert (result.resources.cpu_cores, result.resources.memory_mb) == (4, 512)
    assert result.model_dump(exclude={"resources"}) == base.model_dump(exclude={"resources"})


def test_network_is_patched() -> None:
    result = patched({"network": {"mode": "vsock"}})
    assert result.network is not None and result.network.mode == "isolated"
    assert result.effective_network().mode == "isolated"


def test_null_clears_where_sensible() -> None:
    base = parse_vm_config(config(devices={"pci_passthrough": ["0000:01:00.0"]}))
    result = patched(
        {
            "devices": None,
            "metadata": None,
            "expose": None,
            "api": {"port": None},
            "kernel_cmdline": None,
            "resources": None,
            "runtime": None,
        },
        base,
    )
    assert result.devices is None and result.metadata is None and result.expose is None
    assert result.api is not None and (result.api.host, result.api.port) == ("192.168.127.1", None)
    assert result.kernel_cmdline == ""
    assert result.resources == result.manifest.resources  # back to the manifest's
    assert result.runtime == "caddy"
    assert [(e.port, e.host_port) for e in result.effective_network().expose] == [(80, 8080)]


def test_replacing_the_manifest_moves_the_runtime_along() -> None:
    manifest = copy.deepcopy(CONFIG["manifest"])
    manifest["runtime"] = "caddy2"
    manifest["version"] = "0.2.0"
    result = patched({"manifest": manifest})
    assert (result.manifest.version, result.runtime) == ("0.2.0", "caddy2")


def test_patch_rules() -> None:
    assert patch_issues({"plugin": "nginx"}) == {
        "plugin": "unknown key 'plugin': the plugin of a VM cannot be changed; "
        "create a new VM instead"
    }
    assert patch_issues({"manifest": None}) == {
        "manifest": "cannot be cleared; send a whole manifest to replace it"
    }
    assert patch_issues({"resources": {"cpu_cores": None, "memory_mb": 0}}) == {
        "resources.cpu_cores": "cannot be null; leave the key out to keep the current value",
        "resources.memory_mb": "must be >= 1 (got 0)",
    }
    assert patch_issues({"rootfs": {"url": "/r.img"}, "initramfs": {"url": "/i.cpio"}}) == {
        "rootfs": "give either initramfs or rootfs, not both"
    }
    assert patch_issues({"runtime": "other"}) == {
        "runtime": "'other' does not match the manifest's runtime 'caddy'"
    }


def test_patch_does_not_change_the_original() -> None:
    base = parse_vm_config(CONFIG)
    before = base.model_dump(mode="json")
    patched({"resources": {"memory_mb": 1024}, "network": {"mode": "bridged"}}, base)
    assert base.model_dump(mode="json") == before
