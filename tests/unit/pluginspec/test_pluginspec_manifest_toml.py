"""manifest.toml (upstream fledge's template) converts into the same PluginManifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pluginspec import SpecError, load_manifest, load_manifest_toml, parse_manifest_toml

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec" / "manifests"


def issues(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_manifest_toml(text)
    return {issue.path: issue.message for issue in info.value.issues}


def test_webserver_template_converts_field_by_field() -> None:
    m = load_manifest_toml(FIXTURES / "webserver-manifest.toml")
    assert (m.name, m.version, m.runtime, m.schema_version) == (
        "webserver",
        "1.0.0",
        "webserver",
        "v1",
    )
    assert (m.resources.cpu_cores, m.resources.memory_mb) == (2, 512)
    assert m.workload is not None
    assert m.workload.argv == ["/usr/bin/webserver", "--config", "/etc/webserver/config.yaml"]
    assert m.workload.env == {"LOG_LEVEL": "info", "PORT": "8080"}
    assert m.workload.type == "process"
    assert m.network is not None and m.network.mode == "bridged"
    assert [(e.port, e.host_port, e.protocol) for e in m.network.expose] == [
        (8080, 18080, "tcp"),
        (9090, None, "tcp"),
    ]
    assert m.actions["reload"].path == "/reload"
    assert m.cloud_init is not None and m.cloud_init.user_data is not None
    assert m.cloud_init.user_data.content == "#cloud-config\nruncmd: []\n"
    assert m.cloud_init.meta_data is not None
    assert json.loads(m.cloud_init.meta_data.content or "")["instance-id"] == "webserver-1"
    assert m.devices is not None and m.devices.pci_passthrough == ["0000:01:00.0"]
    assert m.initramfs is None and m.rootfs is None  # a template: fledge adds the artifact


def test_minimal_template_with_vsock_and_empty_entrypoint() -> None:
    m = load_manifest(FIXTURES / "initramfs-minimal-manifest.toml")
    assert m.network is not None and m.network.mode == "isolated"
    assert m.workload is None  # `entrypoint = ""` and nothing else: the agent runs alone


def test_resources_default_to_one_cpu_and_256_mb() -> None:
    m = parse_manifest_toml('name = "tiny"\nversion = "1"\n')
    assert (m.resources.cpu_cores, m.resources.memory_mb) == (1, 256)
    assert m.runtime == "tiny" and m.workload is None and m.network is None


def test_template_may_carry_boot_media_but_not_two() -> None:
    text = 'name = "a"\nversion = "1"\n[rootfs]\nurl = "a.img"\nformat = "squashfs"\n'
    m = parse_manifest_toml(text)
    assert m.rootfs is not None and (m.rootfs.fstype, m.rootfs.url) == ("squashfs", "a.img")
    both = text + '[initramfs]\nurl = "a.cpio"\n'
    assert issues(both) == {"rootfs": "give either initramfs or rootfs, not both"}


def test_toml_syntax_errors_name_line_and_column() -> None:
    found = issues('name = "a"\nversion = \n')
    assert list(found) == [""]
    assert found[""].startswith("invalid TOML")
    assert "line 2" in found[""] and "column" in found[""]


def test_type_errors_speak_toml() -> None:
    found = issues('name = "a"\nversion = "1"\nresources = 4\n[env]\nPORT = 8080\n')
    assert found == {
        "resources": "must be a table (got 4)",
        "env.PORT": "must be a string (got 8080)",
    }


def test_misplaced_keys_get_a_hint() -> None:
    found = issues('name = "a"\nversion = "1"\nentrypoint = "/bin/a"\n')
    assert found == {"entrypoint": "unknown key 'entrypoint': put entrypoint under workload"}


def test_upstream_validation_rules_that_we_keep() -> None:
    found = issues(
        'schema_version = "v2"\nname = "a"\n[resources]\ncpu_cores = 0\n'
        '[network]\nmode = "bridged"\n[[network.expose]]\nport = 0\nprotocol = "icmp"\n'
    )
    assert found == {
        "schema_version": "unsupported schema_version 'v2': this reads version 1 manifests "
        "('1.0', 'v1')",
        "version": "is required",
        "resources.cpu_cores": "must be >= 1 (got 0)",
        "network.expose[0].port": "must be >= 1 (got 0)",
        "network.expose[0].protocol": "invalid value 'icmp', must be one of: tcp, udp",
    }
