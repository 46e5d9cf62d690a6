"""Plugin manifest v1: upstream manifests accepted, normalised, and bad ones explained."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pluginspec import PluginManifest, SpecError, load_manifest, parse_manifest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec"
MANIFESTS = sorted((FIXTURES / "manifests").iterdir())
HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def minimal(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "app", "version": "1.0", "initramfs": {"url": "/a.cpio"}}
    doc.update(extra)
    return doc


def issues(data: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_manifest(data)
    return {issue.path: issue.message for issue in info.value.issues}


def test_seed_initramfs_example_validates_and_is_normalised() -> None:
    m = load_manifest(FIXTURES / "manifests" / "seed-initramfs-myapp.json")
    assert (m.name, m.version, m.runtime, m.enabled) == ("myapp", "0.1.0", "myapp", True)
    assert m.initramfs is not None and m.initramfs.url == "/path/to/plugin.cpio.gz"
    assert m.workload is not None and m.workload.type == "http"
    assert m.workload.entrypoint == ["/usr/bin/myapp"]
    assert m.health_check is not None and m.health_check.timeout_ms == 10000
    assert m.labels == {"volant.plugin": "myapp", "volant.runtime": "myapp"}
    assert m.schema_version == "1.0"


def test_seed_wiring_example_validates_without_resources_or_workload() -> None:
    m = load_manifest(FIXTURES / "manifests" / "seed-manifest-wiring.json")
    assert m.resources.cpu_cores == 1 and m.resources.memory_mb == 256
    assert m.workload is None
    assert m.initramfs is not None and m.initramfs.checksum == f"sha256:{HEX}"


def test_seed_wiring_example_verbatim_placeholder_checksum_is_explained() -> None:
    text = (FIXTURES / "invalid" / "seed-manifest-wiring-verbatim.json").read_text()
    assert issues(text) == {
        "initramfs.checksum": "must be 'sha256:' followed by 64 hex digits, or 64 hex digits "
        "(got 'sha256:…')"
    }


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_fixture_manifest_round_trips(path: Path) -> None:
    first = load_manifest(path)
    dumped = first.model_dump(mode="json")
    again = parse_manifest(json.dumps(dumped), template=path.suffix == ".toml")
    assert again == first
    assert again.to_json() == first.to_json()
    assert json.loads(first.to_json()) == dumped


def test_runtime_defaults_to_name_and_labels_are_forced() -> None:
    m = parse_manifest(minimal(labels={"team": " web ", "volant.plugin": "spoofed"}))
    assert m.runtime == "app"
    assert m.labels == {"team": "web", "volant.plugin": "app", "volant.runtime": "app"}


def test_enabled_is_explicit_and_defaults_to_true() -> None:
    assert parse_manifest(minimal()).enabled is True
    assert parse_manifest(minimal(enabled=False)).enabled is False
    assert issues(minimal(enabled="yes")) == {"enabled": "must be true or false (got 'yes')"}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (HEX, f"sha256:{HEX}"),
        (HEX.upper(), f"sha256:{HEX}"),
        (f"SHA256:{HEX.upper()}", f"sha256:{HEX}"),
        (f"  sha256:{HEX}\n", f"sha256:{HEX}"),
    ],
)
def test_checksums_are_normalised(given: str, stored: str) -> None:
    m = parse_manifest(minimal(initramfs={"url": "/a", "checksum": given}))
    assert m.initramfs is not None and m.initramfs.checksum == stored


def test_other_checksum_algorithms_are_rejected_by_name() -> None:
    found = issues(minimal(initramfs={"url": "/a", "checksum": "sha512:" + "ab" * 64}))
    assert found == {
        "initramfs.checksum": "unsupported checksum algorithm 'sha512': only sha256 is supported "
        "(write 'sha256:<64 hex digits>')"
    }
    assert "initramfs.checksum" in issues(minimal(initramfs={"url": "/a", "checksum": HEX[:40]}))


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://example.com/p.cpio.gz", "https://example.com/p.cpio.gz"),
        ("http://127.0.0.1:8000/p", "http://127.0.0.1:8000/p"),
        ("file:///srv/p.cpio", "file:///srv/p.cpio"),
        ("file://localhost/srv/p.cpio", "file:///srv/p.cpio"),
        ("/srv/p.cpio", "/srv/p.cpio"),
        ("build/p.cpio", "build/p.cpio"),
        ("file://plugin.cpio.gz", "plugin.cpio.gz"),  # what upstream fledge wrote
    ],
)
def test_artifact_locations(url: str, stored: str) -> None:
    m = parse_manifest(minimal(initramfs={"url": url}))
    assert m.initramfs is not None and m.initramfs.url == stored


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/p", "unsupported URL scheme 'ftp'"),
        ("https:///p", "URL has no host"),
        ("/srv/my plugin.cpio", "must not contain spaces"),
        ("http://host:99999/p", "is not a valid URL"),
    ],
)
def test_bad_artifact_locations(url: str, message: str) -> None:
    assert message in issues(minimal(initramfs={"url": url}))["initramfs.url"]


@pytest.mark.parametrize("name", ["myapp", "caddy", "nginx", "a", "web-1", "0day", "x" * 63])
def test_plugin_names_that_are_dns_labels_are_accepted(name: str) -> None:
    assert parse_manifest(minimal(name=name)).name == name


@pytest.mark.parametrize(
    ("name", "hint"),
    [("My_App", "try 'my-app'"), ("-web", "try 'web'"), ("web-", "try 'web'"), ("x" * 64, "try")],
)
def test_plugin_names_that_are_not_dns_labels_get_a_suggestion(name: str, hint: str) -> None:
    message = issues(minimal(name=name))["name"]
    assert message.startswith("must be a DNS label")
    assert hint in message


def test_exactly_one_boot_medium() -> None:
    both = minimal(rootfs={"url": "/root.img"})
    assert issues(both) == {"rootfs": "give either initramfs or rootfs, not both"}
    neither = {"name": "app", "version": "1"}
    assert issues(neither) == {
        "": "a plugin needs a boot artifact: set initramfs.url or rootfs.url"
    }


@pytest.mark.parametrize("fs", ["ext4", "squashfs", "xfs", "btrfs", "EXT4"])
def test_filesystem_given_as_rootfs_format_becomes_fstype(fs: str) -> None:
    m = parse_manifest({"name": "a", "version": "1", "rootfs": {"url": "/r", "format": fs}})
    assert m.rootfs is not None
    assert (m.rootfs.format, m.rootfs.fstype) == ("raw", fs.lower())


def test_rootfs_format_and_fstype_are_separate() -> None:
    m = parse_manifest(
        {"name": "a", "version": "1", "rootfs": {"url": "/r", "format": "qcow2", "fstype": "xfs"}}
    )
    assert m.rootfs is not None and (m.rootfs.format, m.rootfs.fstype) == ("qcow2", "xfs")
    default = parse_manifest({"name": "a", "version": "1", "rootfs": {"url": "/r"}})
    assert default.rootfs is not None and (default.rootfs.format, default.rootfs.fstype) == (
        "raw",
        "ext4",
    )
    clash = {
        "name": "a",
        "version": "1",
        "rootfs": {"url": "/r", "format": "ext4", "fstype": "xfs"},
    }
    assert "names filesystem 'ext4' but fstype is 'xfs'" in issues(clash)["rootfs.format"]


@pytest.mark.parametrize(
    ("given", "mode"),
    [("vsock", "isolated"), ("bridged", "bridged"), ("bridge", "bridged"), ("DHCP", "dhcp")],
)
def test_upstream_network_modes_are_mapped(given: str, mode: str) -> None:
    m = parse_manifest(minimal(network={"mode": given}))
    assert m.network is not None and m.network.mode == mode


def test_network_defaults_to_user_mode_and_rejects_unknown_modes() -> None:
    m = parse_manifest(minimal(network={"expose": [{"port": 80}]}))
    assert m.network is not None and m.network.mode == "user"
    assert m.network.expose[0].protocol == "tcp" and m.network.expose[0].host_port is None
    assert issues(minimal(network={"mode": "nat"})) == {
        "network.mode": "invalid value 'nat', must be one of: user, isolated, bridged, dhcp"
    }


def test_expose_rules() -> None:
    network = {
        "expose": [
            {"name": "web", "port": 80, "host_port": 8080},
            {"name": "web", "port": 81, "host_port": 8080},
            {"port": 53, "host_port": 8080, "protocol": "udp"},
        ]
    }
    found = issues(minimal(network=network))
    assert found == {
        "network.expose[1].name": "duplicate name 'web' (also [0])",
        "network.expose[1].host_port": "tcp host port 8080 is already used by [0]",
    }
    bad_port = minimal(network={"expose": [{"port": 0}, {"port": 22, "host_port": 70000}]})
    assert issues(bad_port) == {
        "network.expose[0].port": "must be >= 1 (got 0)",
        "network.expose[1].host_port": "must be <= 65535 (got 70000)",
    }


def test_bridged_subnet_rules() -> None:
    assert "network.gateway" in issues(
        minimal(network={"mode": "bridged", "subnet": "10.1.0.0/24"})
    )
    outside = minimal(network={"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"})
    assert issues(outside) == {"network.gateway": "10.2.0.1 is not inside subnet 10.1.0.0/24"}
    ok = parse_manifest(
        minimal(network={"mode": "bridged", "subnet": "10.1.0.0/24", "auto_assign": True})
    )
    assert ok.network is not None and ok.network.subnet == "10.1.0.0/24"


def test_workload_type_is_derived_from_base_url() -> None:
    http = parse_manifest(
        minimal(workload={"entrypoint": ["/app"], "base_url": "http://127.0.0.1:80"})
    )
    assert http.workload is not None and http.workload.type == "http"
    proc = parse_manifest(minimal(workload={"entrypoint": ["/bin/worker", "--once"]}))
    assert proc.workload is not None and proc.workload.type == "process"
    assert proc.workload.argv == ["/bin/worker", "--once"]


def test_workload_type_rules() -> None:
    assert issues(minimal(workload={"type": "http", "entrypoint": ["/app"]})) == {
        "workload.base_url": "is required for an http workload"
    }
    mixed = minimal(workload={"type": "process", "base_url": "http://x"})
    assert "only used by http workloads" in issues(mixed)["workload.base_url"]
    assert issues(minimal(workload={"entrypoint": ["", "x"]})) == {
        "workload.entrypoint[0]": "the program path must not be empty"
    }
    assert "workload.workdir" in issues(minimal(workload={"entrypoint": ["/a"], "workdir": "srv"}))
    assert "workload.user" in issues(minimal(workload={"entrypoint": ["/a"], "user": "a b"}))


def test_restart_policy_forms_and_rules() -> None:
    short = parse_manifest(minimal(workload={"entrypoint": ["/a"], "restart": "On-Failure"}))
    assert short.workload is not None and short.workload.restart.policy == "on-failure"
    assert short.workload.restart.backoff_initial_ms == 1000
    default = parse_manifest(minimal(workload={"entrypoint": ["/a"]}))
    assert default.workload is not None and default.workload.restart.policy == "never"
    full = {
        "policy": "always",
        "max_restarts": 3,
        "backoff_initial_ms": 200,
        "backoff_max_ms": 100,
    }
    assert issues(minimal(workload={"entrypoint": ["/a"], "restart": full})) == {
        "workload.restart.backoff_max_ms": "must be >= backoff_initial_ms (200), got 100"
    }
    assert "workload.restart.policy" in issues(minimal(workload={"restart": "sometimes"}))


def test_health_check_rules() -> None:
    workload = {"entrypoint": ["/a"], "base_url": "http://127.0.0.1:80"}
    m = parse_manifest(
        minimal(workload=workload, health_check={"endpoint": "/healthz", "timeout_ms": 0})
    )
    assert m.health_check is not None and m.health_check.timeout_ms == 60_000
    no_http = minimal(workload={"entrypoint": ["/a"]}, health_check={"endpoint": "/"})
    assert issues(no_http) == {"health_check": "needs an http workload (workload.base_url)"}


def test_actions() -> None:
    m = parse_manifest(
        minimal(actions={"reload": {"path": "/reload", "method": "put"}, "ping": {"path": "/p"}})
    )
    assert m.actions["reload"].method == "PUT" and m.actions["ping"].method == "POST"
    found = issues(minimal(actions={"bad name": {"path": "reload"}}))
    assert found['actions."bad name"'].startswith("key must be 1-63 characters")
    assert found['actions."bad name".path'].startswith("must be a URL path starting with /")


def test_disks_cloud_init_and_devices() -> None:
    m = parse_manifest(
        minimal(
            disks=[{"name": "data", "source": "data.qcow2", "format": "qcow2", "readonly": True}],
            cloud_init={
                "user_data": {"content": "#cloud-config\n"},
                "meta_data": {"path": "meta.yaml"},
            },
            devices={"pci_passthrough": ["01:00.0", "0000:02:00.1"], "allowlist": ["10DE:*"]},
        )
    )
    assert m.disks[0].format == "qcow2" and m.disks[0].readonly
    assert m.cloud_init is not None and m.cloud_init.datasource == "NoCloud"
    assert m.cloud_init.user_data is not None and m.cloud_init.user_data.inline is True
    assert m.cloud_init.meta_data is not None and m.cloud_init.meta_data.inline is False
    assert m.devices is not None
    assert m.devices.pci_passthrough == ["0000:01:00.0", "0000:02:00.1"]
    assert m.devices.allowlist == ["10de:*"]
    found = issues(
        minimal(
            disks=[{"name": "d", "source": "/a"}, {"name": "d", "source": "/b"}],
            cloud_init={
                "user_data": {"content": "x", "path": "y"},
                "meta_data": {"inline": False, "content": "x"},
            },
            devices={"pci_passthrough": ["1:0.0"]},
        )
    )
    assert found == {
        "disks[1].name": "duplicate disk name 'd' (also [0])",
        "cloud_init.user_data.content": "give either content or path, not both",
        "cloud_init.meta_data.inline": "is false but the document has content, not a path",
        "devices.pci_passthrough[0]": "must be a PCI address like 0000:01:00.0 (got '1:0.0')",
    }


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    found = issues(minimal(resource={}, workload={"entrypoint": ["/a"], "evn": {}}, colour=1))
    assert found["resource"] == "unknown key 'resource' (did you mean 'resources'?)"
    assert found["workload.evn"] == "unknown key 'evn' (did you mean 'env'?)"
    assert found["colour"].startswith("unknown key 'colour' (allowed: $schema, schema_version,")


def test_all_errors_are_reported_at_once() -> None:
    text = (FIXTURES / "invalid" / "manifest-many-errors.json").read_text()
    found = issues(text)
    assert set(found) == {
        "name",
        "version",
        "resources.cpu_cores",
        "resources.memory_mb",
        "workload.type",
        "initramfs.url",
        "initramfs.checksum",
        "rootfs.format",
        "network.mode",
        "network.expose[0].port",
        "network.expose[0].protocol",
        "extra_thing",
        "resource",
    }
    assert found["resources.cpu_cores"] == "must be >= 1 (got 0)"
    assert found["resources.memory_mb"] == "must be an integer (got '512')"


def test_upstream_server_dump_blank_values_mean_absent() -> None:
    m = load_manifest(FIXTURES / "manifests" / "upstream-server-dump.json")
    assert m.initramfs is None and m.rootfs is not None
    assert m.health_check is None and m.devices is None and m.actions == {}
    assert m.enabled is False and m.schema_version is None
    assert m.network is not None and m.network.mode == "bridged"


def test_fledge_generated_manifest_is_accepted_unchanged() -> None:
    m = load_manifest(FIXTURES / "manifests" / "fledge-generated.manifest.json")
    assert m.workload is not None
    assert m.workload.entrypoint == ["/usr/bin/webserver"]
    assert m.workload.args == ["--config", "/etc/webserver/config.yaml"]
    assert m.workload.env == {"LOG_LEVEL": "info"}
    assert m.initramfs is not None
    assert (m.initramfs.url, m.initramfs.format) == ("plugin.cpio.gz", "cpio.gz")
    assert m.cloud_init is not None and m.cloud_init.meta_data is not None
    assert json.loads(m.cloud_init.meta_data.content or "") == {
        "instance-id": "webserver-1",
        "local-hostname": "webserver",
    }
    assert "env" not in m.model_dump(mode="json")


def test_top_level_env_merges_into_the_workload() -> None:
    m = parse_manifest(
        minimal(env={"A": "1", "B": "1"}, workload={"entrypoint": ["/a"], "env": {"B": "2"}})
    )
    assert m.workload is not None and m.workload.env == {"A": "1", "B": "2"}
    only_env = parse_manifest(minimal(env={"A": "1"}))
    assert only_env.workload is not None and only_env.workload.entrypoint == []


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    doc = minimal(
        initramfs={"url": "out/plugin.cpio.gz"},
        disks=[{"name": "d", "source": "../disks/d.img"}, {"name": "e", "source": "https://x/e"}],
        cloud_init={"user_data": {"path": "user-data.yaml"}},
    )
    (tmp_path / "m.json").write_text(json.dumps(doc))
    m = load_manifest(tmp_path / "m.json", resolve_paths=True)
    assert m.initramfs is not None and m.initramfs.url == str(tmp_path / "out" / "plugin.cpio.gz")
    assert m.disks[0].source == str(tmp_path.parent / "disks" / "d.img")
    assert m.disks[1].source == "https://x/e"
    assert m.cloud_init is not None and m.cloud_init.user_data is not None
    assert m.cloud_init.user_data.path == str(tmp_path / "user-data.yaml")
    assert load_manifest(tmp_path / "m.json").initramfs == parse_manifest(doc).initramfs


def test_parse_manifest_does_not_modify_its_input() -> None:
    doc = minimal(env={"A": "1"}, rootfs=None, labels={"x": "y"})
    before = copy.deepcopy(doc)
    parse_manifest(doc)
    assert doc == before


def test_manifest_models_can_be_built_in_python() -> None:
    m = PluginManifest.model_validate(minimal())
    assert m.boot_artifact is m.initramfs
    assert m.model_dump(mode="json")["$schema"] is None
