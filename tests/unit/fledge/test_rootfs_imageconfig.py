"""The OCI image config as the plugin manifest's workload, and the template laid over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fledge.errors import FledgeError
from fledge.plugin import rootfs_manifest
from fledge.rootfs.imageconfig import ImageRuntime, image_runtime, merge_workload

NGINX: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Env": ["PATH=/usr/local/sbin:/usr/bin", "NGINX_VERSION=1.25.3", "EMPTY="],
        "WorkingDir": "/usr/share/nginx",
        "User": "101:101",
        "ExposedPorts": {"80/tcp": {}, "443": {}, "53/udp": {}, "9/sctp": {}},
        "StopSignal": "SIGQUIT",
    },
}


def test_the_image_config_is_read_as_docker_run_would() -> None:
    runtime = image_runtime(NGINX)
    assert runtime.entrypoint == ["/docker-entrypoint.sh"]
    assert runtime.cmd == ["nginx", "-g", "daemon off;"]
    assert runtime.env == {
        "PATH": "/usr/local/sbin:/usr/bin",
        "NGINX_VERSION": "1.25.3",
        "EMPTY": "",
    }
    assert (runtime.workdir, runtime.user, runtime.stop_signal) == (
        "/usr/share/nginx",
        "101:101",
        "SIGQUIT",
    )
    assert runtime.exposed == [(53, "udp"), (80, "tcp"), (443, "tcp")]
    assert any("9/sctp" in note for note in runtime.notes)


def test_an_image_without_entrypoint_runs_its_cmd() -> None:
    runtime = image_runtime({"config": {"Cmd": ["python3", "app.py"]}})
    workload = merge_workload(runtime, None)
    assert workload["entrypoint"] == [] and workload["args"] == ["python3", "app.py"]


def test_an_empty_config_gives_an_empty_workload() -> None:
    runtime = image_runtime({})
    assert runtime == ImageRuntime()
    assert merge_workload(runtime, None) == {"entrypoint": [], "args": [], "env": {}}


def test_bad_config_types_are_errors() -> None:
    with pytest.raises(FledgeError, match="Cmd must be a list of strings"):
        image_runtime({"config": {"Cmd": [1, 2]}})


@pytest.mark.parametrize(
    ("template", "entrypoint", "args"),
    [
        ({}, ["/docker-entrypoint.sh"], ["nginx", "-g", "daemon off;"]),
        ({"args": ["nginx", "-T"]}, ["/docker-entrypoint.sh"], ["nginx", "-T"]),
        ({"entrypoint": ["/bin/sh"]}, ["/bin/sh"], []),  # docker run --entrypoint drops Cmd
        ({"entrypoint": ["/bin/sh"], "args": ["-c", "id"]}, ["/bin/sh"], ["-c", "id"]),
        ({"entrypoint": []}, ["/docker-entrypoint.sh"], ["nginx", "-g", "daemon off;"]),
    ],
)
def test_template_command_follows_docker_run_rules(
    template: dict[str, Any], entrypoint: list[str], args: list[str]
) -> None:
    workload = merge_workload(image_runtime(NGINX), template)
    assert (workload["entrypoint"], workload["args"]) == (entrypoint, args)


def test_template_fields_win_one_by_one() -> None:
    workload = merge_workload(
        image_runtime(NGINX),
        {"env": {"NGINX_VERSION": "mine", "EXTRA": "1"}, "user": "root", "workdir": None},
    )
    assert workload["env"]["NGINX_VERSION"] == "mine"
    assert workload["env"]["EXTRA"] == "1" and workload["env"]["EMPTY"] == ""
    assert workload["user"] == "root"
    assert workload["workdir"] == "/usr/share/nginx"
    assert workload["stop_signal"] == "SIGQUIT"


def _manifest(tmp_path: Path, template: str | None) -> Any:
    path = None
    if template is not None:
        path = tmp_path / "manifest.toml"
        path.write_text(template)
    artifact = tmp_path / "plugin.img"
    artifact.write_bytes(b"")
    return rootfs_manifest(
        artifact=artifact,
        sha256="ab" * 32,
        fstype="ext4",
        image=image_runtime(NGINX),
        image_source="nginx:1.25",
        image_digest="sha256:" + "cd" * 32,
        template=path,
        default_name="web",
    )


def test_rootfs_manifest_carries_the_image_runtime_ports_and_digest(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, None)
    assert manifest.name == "web"
    assert manifest.rootfs is not None and manifest.initramfs is None
    assert manifest.rootfs.format == "raw" and manifest.rootfs.fstype == "ext4"
    assert manifest.rootfs.checksum == "sha256:" + "ab" * 32
    assert manifest.rootfs.url == str((tmp_path / "plugin.img").resolve())
    assert (manifest.image, manifest.image_digest) == ("nginx:1.25", "sha256:" + "cd" * 32)
    workload = manifest.workload
    assert workload.argv == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    assert workload.user == "101:101" and workload.stop_signal == "SIGQUIT"
    assert workload.workdir == "/usr/share/nginx"
    assert manifest.network is not None
    assert [(e.port, e.protocol, e.host_port) for e in manifest.network.expose] == [
        (53, "udp", None),
        (80, "tcp", None),
        (443, "tcp", None),
    ]


def test_template_workload_and_expose_win(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path,
        'schema_version = "v1"\nname = "web"\nversion = "2.0.0"\n'
        "[workload]\n"
        'type = "http"\nbase_url = "http://127.0.0.1:80"\nargs = ["nginx", "-T"]\n'
        '[env]\nMODE = "prod"\n'
        '[network]\nmode = "user"\n[[network.expose]]\nport = 80\nhost_port = 8080\n',
    )
    workload = manifest.workload
    assert workload.type == "http" and workload.base_url == "http://127.0.0.1:80"
    assert workload.argv == ["/docker-entrypoint.sh", "nginx", "-T"]
    assert workload.env["MODE"] == "prod" and workload.env["NGINX_VERSION"] == "1.25.3"
    assert [(e.port, e.host_port) for e in manifest.network.expose] == [(80, 8080)]


def test_a_template_that_sets_the_boot_artifact_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FledgeError, match="fledge fills in the boot artifact"):
        _manifest(
            tmp_path,
            'schema_version = "v1"\nname = "web"\nversion = "1"\n[rootfs]\nurl = "/x.img"\n',
        )
