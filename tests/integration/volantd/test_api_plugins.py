"""Installing plugins through the API: every artifact verified into the cache first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.manifests import artifact, manifest
from support.volantd import Volantd

pytestmark = pytest.mark.integration


def test_install_from_a_body_verifies_and_caches_the_artifact(
    volantd: Volantd, tmp_path: Path
) -> None:
    image, checksum = artifact(tmp_path, "web.cpio", b"cpio bytes of web")
    with volantd.client() as client:
        created = client.post("/api/v1/plugins", json=manifest("web", str(image), checksum))
        assert created.status_code == 201, created.text
        plugin = created.json()
        assert (plugin["name"], plugin["version"], plugin["enabled"]) == ("web", "1.0.0", True)
        (stored,) = plugin["artifacts"]
        assert stored["sha256"] == checksum.removeprefix("sha256:")
        cached = Path(stored["path"])
        assert cached.read_bytes() == b"cpio bytes of web"
        assert cached.is_relative_to(volantd.home)
        image.write_bytes(b"changed afterwards")  # the installed copy does not change
        assert cached.read_bytes() == b"cpio bytes of web"

        listed = client.get("/api/v1/plugins").json()
        assert "web" in listed["plugins"]
        assert client.get("/api/v1/plugins/web").json()["initramfs"]["url"] == str(image)
        assert client.get("/api/v1/plugins/web/info").json()["artifacts"] == [stored]
        assert client.get("/api/v1/plugins/web/artifacts/initramfs").json() == stored


def test_a_checksum_mismatch_is_rejected_with_both_digests(
    volantd: Volantd, tmp_path: Path
) -> None:
    image, actual = artifact(tmp_path, "bad.cpio", b"what is really there")
    claimed = "sha256:" + "ab" * 32
    with volantd.client() as client:
        refused = client.post("/api/v1/plugins", json=manifest("bad", str(image), claimed))
        assert refused.status_code == 422
        message = refused.json()["error"]
        assert actual.removeprefix("sha256:") in message and "ab" * 32 in message
        assert client.get("/api/v1/plugins/bad").status_code == 404


def test_install_from_urls_and_a_404(volantd: Volantd, file_server) -> None:
    base, folder = file_server
    _, checksum = artifact(folder, "net.cpio", b"served over http")
    (folder / "net.json").write_text(json.dumps(manifest("net", "net.cpio", checksum)))
    with volantd.client() as client:
        by_url = client.post("/api/v1/plugins", json={"source": f"{base}/net.json"})
        assert by_url.status_code == 201, by_url.text
        assert by_url.json()["artifacts"][0]["source_url"] == f"{base}/net.cpio"

        gone = manifest("gone", f"{base}/missing.cpio", "sha256:" + "00" * 32)
        missing = client.post("/api/v1/plugins", json=gone)
        assert missing.status_code == 422
        assert "404" in missing.json()["error"] and "missing.cpio" in missing.json()["error"]

        unchecked = client.post("/api/v1/plugins", json=manifest("raw", f"{base}/net.cpio", None))
        assert unchecked.status_code == 422 and "checksum is required" in unchecked.json()["error"]


def test_install_from_a_file_on_the_host_resolves_relative_paths(
    volantd: Volantd, tmp_path: Path
) -> None:
    _, checksum = artifact(tmp_path, "local.cpio", b"next to its manifest")
    (tmp_path / "plugin.json").write_text(json.dumps(manifest("local", "local.cpio", checksum)))
    with volantd.client() as client:
        created = client.post("/api/v1/plugins", json={"source": str(tmp_path / "plugin.json")})
        assert created.status_code == 201, created.text
        relative = client.post("/api/v1/plugins", json={"source": "plugin.json"})
        assert relative.status_code == 400 and "absolute path" in relative.json()["error"]
        body_relative = client.post("/api/v1/plugins", json=manifest("rel", "x.cpio", checksum))
        assert body_relative.status_code == 422 and "relative path" in body_relative.json()["error"]


def test_invalid_manifests_name_every_field(volantd: Volantd) -> None:
    with volantd.client() as client:
        refused = client.post("/api/v1/plugins", json={"name": "Bad Name!", "version": ""})
    assert refused.status_code == 422
    paths = {issue["path"] for issue in refused.json()["issues"]}
    assert {"name", "version"} <= paths


def test_reinstall_needs_replace_and_life_cycle(volantd: Volantd, tmp_path: Path) -> None:
    image, checksum = artifact(tmp_path, "cycle.cpio", b"v1")
    image2, checksum2 = artifact(tmp_path, "cycle2.cpio", b"v2")
    with volantd.client() as client:
        assert (
            client.post("/api/v1/plugins", json=manifest("cycle", str(image), checksum)).status_code
            == 201
        )
        again = client.post(
            "/api/v1/plugins", json=manifest("cycle", str(image2), checksum2, "2.0.0")
        )
        assert again.status_code == 409 and "replace=true" in again.json()["error"]
        replaced = client.post(
            "/api/v1/plugins?replace=true", json=manifest("cycle", str(image2), checksum2, "2.0.0")
        )
        assert replaced.status_code == 201 and replaced.json()["version"] == "2.0.0"

        disabled = client.post("/api/v1/plugins/cycle/enabled", json={"enabled": False})
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        assert client.get("/api/v1/plugins/cycle/manifest").status_code == 409
        assert client.get("/api/v1/plugins/cycle").status_code == 200
        assert client.post("/api/v1/plugins/cycle/enabled", json={}).status_code == 422
        client.post("/api/v1/plugins/cycle/enabled", json={"enabled": True})
        assert client.get("/api/v1/plugins/cycle/manifest").json()["version"] == "2.0.0"

        cached = Path(replaced.json()["artifacts"][0]["path"])
        assert client.delete("/api/v1/plugins/cycle").status_code == 204
        assert client.get("/api/v1/plugins/cycle").status_code == 404
        assert client.delete("/api/v1/plugins/cycle").status_code == 404
        assert not cached.exists()  # no other plugin used that blob


def test_plugins_survive_a_restart(tmp_path: Path) -> None:
    from support.volantd import running_volantd

    image, checksum = artifact(tmp_path, "keep.cpio", b"kept")
    home = tmp_path / "home"
    with running_volantd(home) as daemon, daemon.client() as client:
        client.post("/api/v1/plugins", json=manifest("keep", str(image), checksum))
    with running_volantd(home) as daemon, daemon.client() as client:
        assert client.get("/api/v1/plugins").json()["plugins"] == ["keep"]


def test_openapi_documents_are_served_without_reading_host_files(
    volantd: Volantd, tmp_path: Path, file_server
) -> None:
    _, checksum = artifact(tmp_path, "doc.cpio", b"with docs")
    (tmp_path / "openapi.json").write_text('{"openapi": "3.0.3", "paths": {}}')
    with_file = manifest("documented", "doc.cpio", checksum) | {"openapi": "openapi.json"}
    (tmp_path / "documented.json").write_text(json.dumps(with_file))
    base, folder = file_server
    (folder / "remote.yaml").write_text("openapi: 3.0.3\n")
    image = str(tmp_path / "doc.cpio")
    remote = manifest("remote-doc", image, checksum) | {"openapi": f"{base}/remote.yaml"}
    with volantd.client() as client:
        assert (
            client.post(
                "/api/v1/plugins", json={"source": str(tmp_path / "documented.json")}
            ).status_code
            == 201
        )
        assert client.post("/api/v1/plugins", json=remote).status_code == 201
        client.post("/api/v1/vms?start=false", json={"name": "doc-1", "plugin": "documented"})
        client.post("/api/v1/vms?start=false", json={"name": "doc-2", "plugin": "remote-doc"})
        (tmp_path / "openapi.json").write_text("changed on the host")  # served from the cache
        served = client.get("/api/v1/vms/doc-1/openapi")
        assert served.json() == {"openapi": "3.0.3", "paths": {}}
        fetched = client.get("/api/v1/vms/doc-2/openapi")
        assert fetched.text == "openapi: 3.0.3\n"
        assert fetched.headers["content-type"].startswith("application/yaml")

        # upstream served any host file named by a manifest: /etc/shadow included
        sneaky = manifest("sneaky", image, checksum) | {"openapi": "/etc/shadow"}
        refused = client.post("/api/v1/plugins", json=sneaky)
        assert refused.status_code == 422 and "outside the plugin's folder" in refused.text
        for name in ("doc-1", "doc-2"):
            client.delete(f"/api/v1/vms/{name}")
