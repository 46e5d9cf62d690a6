"""The real `volar` against a real volantd: success paths, errors, output formats, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from support.guest import free_port
from support.manifests import artifact, manifest
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.integration

VOLAR = Path(sys.executable).parent / "volar"


@pytest.fixture(scope="module")
def volantd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    with running_volantd(tmp_path_factory.mktemp("volar") / "home") as daemon:
        yield daemon


def volar(daemon_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOLAR), "--api", daemon_url, *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    _, checksum = artifact(folder, "cli.cpio", b"an image")
    path = folder / "plugin.json"
    path.write_text(json.dumps(manifest("cli", "cli.cpio", checksum)))  # relative artifact path
    return path


def test_plugins_from_a_file_with_relative_paths(volantd: Volantd, plugin_file: Path) -> None:
    installed = volar(volantd.url, "plugins", "install", str(plugin_file))
    assert installed.returncode == 0, installed.stderr
    assert "cli" in installed.stdout and "1.0.0" in installed.stdout
    listed = json.loads(volar(volantd.url, "plugins", "list", "-o", "json").stdout)
    assert [(p["name"], p["enabled"]) for p in listed] == [("cli", True)]
    shown = yaml.safe_load(volar(volantd.url, "plugins", "show", "cli").stdout)
    assert shown["initramfs"]["url"] == str(plugin_file.parent / "cli.cpio")
    assert volar(volantd.url, "plugins", "disable", "cli").stdout.strip() == "plugin cli disabled"
    refused = volar(volantd.url, "vms", "create", "off-1", "--plugin", "cli", "--no-start")
    assert refused.returncode == 1 and "disabled" in refused.stderr
    assert volar(volantd.url, "plugins", "enable", "cli").returncode == 0
    again = volar(volantd.url, "plugins", "install", str(plugin_file))
    assert again.returncode == 1 and "replace=true" in again.stderr
    assert volar(volantd.url, "plugins", "install", str(plugin_file), "--replace").returncode == 0


def test_vms_records_and_output_formats(volantd: Volantd, plugin_file: Path) -> None:
    volar(volantd.url, "plugins", "install", str(plugin_file), "--replace")
    created = volar(volantd.url, "vms", "create", "cli-1", "--plugin", "cli", "--no-start")
    assert created.returncode == 0, created.stderr
    table = volar(volantd.url, "vms", "list").stdout
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "PLUGIN"]
    assert any(row.split()[:3] == ["cli-1", "pending", "cli"] for row in rows)
    as_yaml = yaml.safe_load(volar(volantd.url, "vms", "get", "cli-1", "-o", "yaml").stdout)
    assert as_yaml["name"] == "cli-1" and as_yaml["status"] == "pending"
    filtered = json.loads(
        volar(volantd.url, "vms", "list", "--status", "running", "-o", "json").stdout
    )
    assert filtered == []
    assert volar(volantd.url, "vms", "delete", "cli-1").stdout.strip() == "vm cli-1 deleted"
    gone = volar(volantd.url, "vms", "get", "cli-1")
    assert gone.returncode == 1
    assert gone.stderr.strip() == 'error: vm "cli-1" not found (HTTP 404)'


def test_errors_are_one_line_and_usage_errors_exit_2(volantd: Volantd, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    unreachable = volar(down, "vms", "list")
    assert unreachable.returncode == 1
    assert (
        unreachable.stderr.count("\n") == 1
        and f"cannot reach volantd at {down}" in unreachable.stderr
    )
    missing = volar(volantd.url, "plugins", "install", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    usage = volar(volantd.url, "vms", "create", "x")  # --plugin missing
    assert usage.returncode == 2
    bad_wait = volar(volantd.url, "vms", "create", "x", "--plugin", "cli", "--wait", "soon")
    assert bad_wait.returncode == 2 and "--wait" in bad_wait.stderr
    versions = volar(volantd.url, "version").stdout
    assert "volar 0.1.0" in versions and f"volantd 0.1.0 at {volantd.url}" in versions


def test_create_options_become_the_vms_config(volantd: Volantd, tmp_path: Path) -> None:
    """--network, --publish and --cloud-init-* reach the VM's config; files are read by volar
    (volantd reads no host file on a request)."""
    body = manifest("pub", "pub.cpio", artifact(tmp_path, "pub.cpio", b"an image")[1])
    body["network"] = {"mode": "user", "expose": [{"name": "http", "port": 80}]}
    (tmp_path / "pub.json").write_text(json.dumps(body))
    assert volar(volantd.url, "plugins", "install", str(tmp_path / "pub.json")).returncode == 0
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nhostname: from-volar\n")
    created = volar(
        volantd.url, "vms", "create", "pub-1", "--plugin", "pub", "--no-start",
        "--network", "bridged", "-p", "8080:80", "--publish", "5353/udp",
        "--cloud-init-user-data", str(user_data), "--cloud-init-seed", "iso9660",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    config = httpx.get(f"{volantd.url}/api/v1/vms/pub-1/config", timeout=10).json()["config"]
    assert config["network"]["mode"] == "bridged"
    assert config["expose"] == [  # the manifest's entry got its host port; the other was added
        {"name": "http", "port": 80, "host_port": 8080, "protocol": "tcp"},
        {"name": None, "port": 5353, "host_port": None, "protocol": "udp"},
    ]
    assert config["cloud_init"]["seed_mode"] == "iso9660"
    assert config["cloud_init"]["user_data"]["content"] == user_data.read_text()
    assert config["cloud_init"]["user_data"]["path"] is None
    for bad in ("80:http", "8080:80/sctp", "x"):
        refused = volar(volantd.url, "vms", "create", "pub-2", "--plugin", "pub", "--no-start",
                        "-p", bad)  # fmt: skip
        assert refused.returncode == 2 and "--publish" in refused.stderr, refused.stderr
    missing = volar(volantd.url, "vms", "create", "pub-2", "--plugin", "pub", "--no-start",
                    "--cloud-init-user-data", str(tmp_path / "nope"))  # fmt: skip
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert volar(volantd.url, "vms", "get", "pub-2").returncode == 1  # nothing was created
    assert volar(volantd.url, "vms", "delete", "pub-1").returncode == 0
