"""Default-mode initramfs builds: compiled init, the bundled kestrel zipapp and the guest
Python runtime, laid out as docs/guest.md says; byte-identical rebuilds; the example plugin.

The runtime (fledge.runtime) packs the host's Python; the zipapp comes from kestrel.zipapp.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fledge.archive import ArchiveMember, read_archive
from fledge.initc import build_init
from fledge.initramfs import BuildOptions, BuildResult, build

pytestmark = pytest.mark.integration

FLEDGE = Path(sys.executable).parent / "fledge"
REPO = Path(__file__).resolve().parents[3]
PREFIX = "opt/volant/python"
DEFAULT = 'version = "1"\nstrategy = "initramfs"\n'


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fledge-cache")


def project(root: Path, config: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "fledge.toml").write_text(config)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "fledge.toml"


def members(result: BuildResult) -> dict[str, ArchiveMember]:
    return {member.path: member for member in read_archive(result.artifact)}


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> BuildResult:
    """A default-mode build with every default: bundled agent, host busybox, zstd."""
    root = tmp_path_factory.mktemp("bundled")
    config = project(root / "plugin", DEFAULT + '[mappings]\n"www" = "/var/www"\n', {
        "www/index.html": "<h1>hello</h1>\n"
    })  # fmt: skip
    return build(config, BuildOptions(output_dir=root / "out", cache_dir=cache_dir))


def test_default_mode_layout_follows_the_guest_contract(
    bundled: BuildResult, cache_dir: Path
) -> None:
    image = members(bundled)
    init = image["init"]
    assert (init.kind, init.permissions) == ("file", 0o755)
    assert init.data == build_init(cache_dir).read_bytes()
    agent = image["opt/volant/kestrel.pyz"]
    assert (agent.kind, agent.permissions) == ("file", 0o644)
    assert agent.data.startswith(b"#!") or agent.data[:2] == b"PK"
    loader = image[f"{PREFIX}/lib/ld-linux-x86-64.so.2"]
    assert loader.kind == "file" and loader.permissions & stat.S_IXUSR
    assert image[f"{PREFIX}/bin/python3"].kind == "file"
    assert any(path.startswith(f"{PREFIX}/lib/python3") for path in image)
    assert image["bin/sh"].target == "busybox" and image["var/www/index.html"].size == 15
    assert bundled.init_mode == "default"
    assert bundled.manifest.initramfs is not None
    assert bundled.manifest.initramfs.checksum == f"sha256:{bundled.sha256}"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> BuildResult:
    """A default-mode build with a local agent file and gzip."""
    root = tmp_path_factory.mktemp("local")
    config = project(
        root / "plugin",
        DEFAULT + '[agent]\nsource_strategy = "local"\npath = "dist/agent.pyz"\n'
        '[initramfs]\ncompression = "gzip"\n',
        {"dist/agent.pyz": "print('agent')\n"},
    )
    return build(config, BuildOptions(output_dir=root / "out", cache_dir=cache_dir))


def test_the_guest_interpreter_runs_the_way_init_execs_it(
    local: BuildResult, tmp_path: Path
) -> None:
    """Unpack the runtime and start Python exactly as init does (own loader, PYTHONHOME)."""
    root = tmp_path / "root"
    for member in read_archive(local.artifact):
        if not (member.path.startswith("opt/volant/") or member.path == "opt/volant"):
            continue
        path = root / member.path
        if member.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif member.kind == "symlink":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(member.target)
        elif member.kind == "file":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(member.data)
            path.chmod(member.permissions)
    prefix = root / PREFIX
    result = subprocess.run(
        [
            *(str(prefix / "lib/ld-linux-x86-64.so.2"), "--library-path", str(prefix / "lib")),
            *(str(prefix / "bin/python3"), "-s", "-S", "-B", "-c"),
            "import sys, json, zipfile; print(sys.version_info[:2], sys.prefix)",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONHOME": str(prefix), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tuple(sys.version_info[:2])} {prefix}"


def test_default_mode_rebuilds_are_byte_identical(
    bundled: BuildResult, tmp_path: Path, cache_dir: Path
) -> None:
    source = bundled.artifact.parent.parent / "plugin"
    again = build(
        source / "fledge.toml", BuildOptions(output_dir=tmp_path / "again", cache_dir=cache_dir)
    )
    assert again.artifact.read_bytes() == bundled.artifact.read_bytes()


def test_a_local_agent_replaces_the_bundled_one(local: BuildResult, cache_dir: Path) -> None:
    image = members(local)
    assert image["opt/volant/kestrel.pyz"].data == b"print('agent')\n"
    assert image["init"].data == build_init(cache_dir).read_bytes()
    assert f"{PREFIX}/lib/ld-linux-x86-64.so.2" in image
    assert local.artifact.name == "plugin.cpio.gz"


def test_the_example_plugin_builds_with_the_cli(tmp_path: Path, cache_dir: Path) -> None:
    example = tmp_path / "busybox-httpd"
    shutil.copytree(REPO / "examples" / "busybox-httpd", example)
    result = subprocess.run(
        [str(FLEDGE), "build", "-c", str(example / "fledge.toml"), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "FLEDGE_CACHE_DIR": str(cache_dir)},
    )
    assert result.returncode == 0, result.stderr
    assert "(initramfs, default init mode)" in result.stdout
    manifest = json.loads((tmp_path / "out" / "plugin.manifest.json").read_text())
    assert manifest["name"] == "busybox-httpd"
    assert manifest["workload"]["entrypoint"] == ["/bin/httpd"]
    assert manifest["initramfs"]["url"] == str(tmp_path / "out" / "plugin.cpio.zst")
    listing = subprocess.run(
        [str(FLEDGE), "inspect", str(tmp_path / "out" / "plugin.cpio.zst")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert " /opt/volant/kestrel.pyz\n" in listing and " /var/www/index.html\n" in listing
