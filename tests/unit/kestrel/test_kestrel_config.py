"""Reading vm.json (contract 1) as plain JSON, the way the guest does."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kestrel.config import (
    DEFAULT_HEALTH_TIMEOUT_MS,
    HealthCheck,
    RestartPolicy,
    load_config,
    parse_config,
)
from kestrel.errors import ConfigError
from pluginspec import (
    GuestBoot,
    GuestNetwork,
    GuestWorkload,
    VMContract,
    VMIdentity,
    parse_manifest,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec" / "vm" / "vm.json"


def contract(**manifest_changes: Any) -> dict[str, Any]:
    """A vm.json document written by pluginspec, exactly as volantd produces it."""
    manifest = parse_manifest(
        {
            "name": "api",
            "version": "2.0",
            "initramfs": {"url": "/plugins/api.cpio.gz"},
            "workload": {
                "entrypoint": ["/srv/api", "--port", "9000"],
                "args": ["--verbose"],
                "env": {"MODE": "prod"},
                "workdir": "/srv",
                "user": "app:staff",
                "base_url": "http://127.0.0.1:9000/api",
                "restart": {"policy": "always", "max_restarts": 3, "backoff_initial_ms": 200},
            },
            "health_check": {"endpoint": "/healthz", "timeout_ms": 1500, "interval_ms": 25},
            "actions": {"reload": {"method": "post", "path": "/admin/reload", "timeout_ms": 900}},
            **manifest_changes,
        }
    )
    document = VMContract(
        vm=VMIdentity(name="api-1", id="vm-9"),
        hostname="api-1",
        manifest=manifest,
        workload=GuestWorkload.from_manifest(manifest),
        network=GuestNetwork(mode="isolated", mac=None),
        boot=GuestBoot(strategy="initramfs"),
        console_shell=True,
        boot_epoch_ns=77,
    ).to_json()
    return json.loads(document)  # type: ignore[no-any-return]


def test_reads_the_pluginspec_fixture() -> None:
    config = load_config(str(FIXTURE))
    assert (config.vm_name, config.vm_id, config.hostname) == ("web", "7", "web")
    assert config.tcp_port == 8080 and config.vsock_port is None
    assert config.console_shell is False and config.boot_epoch_ns == 1732620000123456789
    workload = config.workload
    assert workload is not None
    assert workload.type == "http"
    assert workload.argv == ["/usr/bin/caddy", "run", "--config", "/etc/caddy/Caddyfile"]
    assert workload.restart == RestartPolicy("on-failure", 5, 500, 10_000, 2.0)
    assert workload.health_check == HealthCheck("/", 10_000, 50)
    network = config.network
    assert (network.interface, network.mac) == ("eth0", "02:5e:10:aa:00:01")
    assert (network.address, network.prefix, network.gateway) == ("10.0.2.15", 24, "10.0.2.2")
    assert network.dns == ("10.0.2.3",)


def test_reads_every_workload_field_of_a_contract_built_by_pluginspec() -> None:
    config = parse_config(contract())
    workload = config.workload
    assert workload is not None
    assert workload.argv == ["/srv/api", "--port", "9000", "--verbose"]
    assert workload.env == {"MODE": "prod"}
    assert (workload.workdir, workload.user) == ("/srv", "app:staff")
    assert workload.base_url == "http://127.0.0.1:9000/api"
    assert workload.restart == RestartPolicy("always", 3, 200, 30_000, 2.0)
    assert workload.health_check == HealthCheck("/healthz", 1500, 25)
    assert config.network.mac is None and config.network.address is None
    assert config.console_shell is True
    assert [(a.name, a.method, a.path, a.timeout_ms) for a in config.actions] == [
        ("reload", "POST", "/admin/reload", 900)
    ]


def test_no_workload_means_agent_only() -> None:
    document = contract(workload=None, health_check=None)
    assert document["workload"] is None
    assert parse_config(document).workload is None


def test_health_timeout_zero_means_the_contract_default() -> None:
    document = contract()
    document["workload"]["health_check"]["timeout_ms"] = 0
    check = parse_config(document).workload.health_check  # type: ignore[union-attr]
    assert check is not None and check.timeout_ms == DEFAULT_HEALTH_TIMEOUT_MS


def test_restart_shorthand_string_is_accepted() -> None:
    document = contract()
    document["workload"]["restart"] = "on-failure"
    restart = parse_config(document).workload.restart  # type: ignore[union-attr]
    assert restart == RestartPolicy(policy="on-failure")


def _broken(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(contract())
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("contract", 2, "contract: unsupported version 2"),
        ("hostname", KeyError, "hostname: is missing"),
        ("hostname", 5, "hostname: must be a string, got an integer"),
        ("vm", "web", "vm: must be a JSON object, got a string"),
        ("workload.type", "daemon", "workload.type: must be one of http, process"),
        ("workload.restart.policy", "sometimes", "workload.restart.policy: must be one of"),
        ("workload.entrypoint", ["ok", 3], "workload.entrypoint[1]: must be a string"),
        ("workload.env", {"A": 1}, "workload.env.A: must be a string"),
        ("workload.base_url", None, "workload.base_url: is required for an http workload"),
        ("agent.tcp_port", 70000, "agent.tcp_port: must be a TCP port"),
        ("console_shell", "yes", "console_shell: must be true or false, got a string"),
        ("network.address", "10.0.0.2", "network.prefix: is required with an address"),
    ],
)
def test_errors_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^vm\.json: ") as info:
        parse_config(_broken(path, value))
    assert message in str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.json"):
        load_config(str(tmp_path / "missing.json"))
    broken = tmp_path / "vm.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(broken))
