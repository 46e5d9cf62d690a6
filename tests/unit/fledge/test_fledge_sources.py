"""Where busybox and the agent come from: host, files, downloads with checksums."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fledge.agent import fetch_agent
from fledge.busybox import applet_link, busybox_applets, busybox_entries, resolve_busybox
from fledge.download import download
from fledge.errors import FledgeError
from pluginspec import AgentConfig, SourceConfig
from pluginspec.cpio import CpioEntry

HOST_BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox").resolve()


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: object) -> _Files:
        return _Files(*args, directory=str(root))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_applet_links_are_relative_to_bin_busybox() -> None:
    assert applet_link("bin/ls") == CpioEntry.symlink("/bin/ls", "busybox")
    assert applet_link("sbin/ifconfig") == CpioEntry.symlink("/sbin/ifconfig", "../bin/busybox")
    assert applet_link("usr/bin/awk") == CpioEntry.symlink("/usr/bin/awk", "../../bin/busybox")
    assert applet_link("usr/sbin/crond").target == "../../bin/busybox"


def test_every_applet_of_the_host_busybox_is_linked_and_sh_works() -> None:
    applets = busybox_applets(HOST_BUSYBOX)
    assert {"bin/sh", "bin/ls", "sbin/ifconfig", "usr/bin/wget"} <= set(applets)
    assert all(a.split("/")[0] in ("bin", "sbin", "usr") for a in applets)
    assert "linuxrc" not in applets and "bin/busybox" not in applets
    entries = {entry.path: entry for entry in busybox_entries(HOST_BUSYBOX)}
    assert entries["/bin/busybox"].mode == 0o755
    assert entries["/bin/busybox"].data == HOST_BUSYBOX.read_bytes()
    assert entries["/bin/sh"].target == "busybox"
    assert entries["/usr/sbin/httpd"].target == "../../bin/busybox"  # where busybox puts it
    names = {applet.rsplit("/", 1)[1] for applet in applets}
    assert all(entries[f"/bin/{name}"].target == "busybox" for name in names)  # as upstream
    assert set(entries) == {"/bin/busybox"} | {f"/{a}" for a in applets} | {
        f"/bin/{name}" for name in names
    }


def test_the_default_is_the_host_static_busybox(tmp_path: Path) -> None:
    assert resolve_busybox(SourceConfig(), tmp_path, tmp_path) == HOST_BUSYBOX


def test_a_dynamic_busybox_is_refused_naming_busybox_static(tmp_path: Path) -> None:
    dynamic = shutil.which("python3")
    assert dynamic is not None
    source = SourceConfig(busybox_url=dynamic)
    with pytest.raises(FledgeError, match=r"is dynamically linked .*install busybox-static"):
        resolve_busybox(source, tmp_path, tmp_path)
    (tmp_path / "busybox.sh").write_text("#!/bin/sh\n")
    with pytest.raises(FledgeError, match=r"not an ELF executable: install busybox-static"):
        resolve_busybox(SourceConfig(busybox_url="busybox.sh"), tmp_path, tmp_path)


def test_a_local_busybox_is_relative_to_the_config_and_checked(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    shutil.copy(HOST_BUSYBOX, tmp_path / "tools" / "busybox")
    digest = sha256(HOST_BUSYBOX.read_bytes())
    source = SourceConfig(busybox_url="tools/busybox", busybox_sha256=digest)
    assert resolve_busybox(source, tmp_path, tmp_path) == tmp_path / "tools" / "busybox"
    wrong = SourceConfig(busybox_url="file://tools/busybox", busybox_sha256="0" * 64)
    with pytest.raises(FledgeError) as info:
        resolve_busybox(wrong, tmp_path, tmp_path)
    assert f"expected: sha256:{'0' * 64}\n  got:      sha256:{digest}" in str(info.value)


def test_a_downloaded_busybox_is_verified_and_cached(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    shutil.copy(HOST_BUSYBOX, root / "busybox")
    digest = sha256(HOST_BUSYBOX.read_bytes())
    cache = tmp_path / "cache"
    source = SourceConfig(busybox_url=f"{base}/busybox", busybox_sha256=digest)
    fetched = resolve_busybox(source, tmp_path, cache)
    assert fetched == cache / "downloads" / "sha256" / digest
    (root / "busybox").unlink()  # a cached, verified copy needs no network
    assert resolve_busybox(source, tmp_path, cache) == fetched


def test_a_download_mismatch_names_both_digests(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, base = served
    (root / "tampered").write_bytes(b"not busybox")
    with pytest.raises(FledgeError) as info:
        download(f"{base}/tampered", tmp_path, sha256="sha256:" + "a" * 64, what="busybox_url")
    assert str(info.value).startswith(f"busybox_url: checksum mismatch for {base}/tampered\n")
    assert f"expected: sha256:{'a' * 64}\n  got:      sha256:{sha256(b'not busybox')}" in str(
        info.value
    )
    assert not list((tmp_path / "downloads" / "sha256").iterdir())
    with pytest.raises(FledgeError, match=r"failed with HTTP 404"):
        download(f"{base}/missing", tmp_path, sha256=None, what="agent.url")


def test_local_and_http_agents(tmp_path: Path, served: tuple[Path, str]) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "kestrel.pyz").write_bytes(b"PK local agent")
    local = fetch_agent(
        AgentConfig(source_strategy="local", path="dist/kestrel.pyz"),
        tmp_path,
        tmp_path,
        python="/usr/bin/python3",
    )
    assert local.data == b"PK local agent" and local.origin.startswith("local ")
    with pytest.raises(FledgeError, match=r"agent.path: 'nope.pyz' does not exist"):
        fetch_agent(
            AgentConfig(source_strategy="local", path="nope.pyz"),
            tmp_path,
            tmp_path,
            python="/usr/bin/python3",
        )
    root, base = served
    (root / "kestrel.pyz").write_bytes(b"PK remote agent")
    pinned = AgentConfig(
        source_strategy="http", url=f"{base}/kestrel.pyz", checksum=sha256(b"PK remote agent")
    )
    remote = fetch_agent(pinned, tmp_path, tmp_path / "cache", python="/usr/bin/python3")
    assert remote.data == b"PK remote agent" and remote.notes == ()
    unpinned = AgentConfig(source_strategy="http", url=f"{base}/kestrel.pyz")
    loose = fetch_agent(unpinned, tmp_path, tmp_path / "cache", python="/usr/bin/python3")
    assert loose.notes == ("agent downloaded without agent.checksum: pin it",)
