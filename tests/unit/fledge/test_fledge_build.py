"""fledge build (initramfs): init modes, skeleton, reproducible output, compression, manifest.

Default-mode builds need the guest Python runtime and the kestrel zipapp; they are in
tests/integration/fledge. Custom and none modes install neither, so they are built here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fledge.archive import ArchiveMember, read_archive
from fledge.errors import FledgeError
from fledge.initramfs import BuildOptions, build
from fledge.skeleton import GROUP, HOSTS, PASSWD
from fledge.tree import ImageTree
from pluginspec import load_manifest

MakeProject = Callable[..., Path]
Assemble = Callable[[Path], ImageTree]

INITRAMFS = 'version = "1"\nstrategy = "initramfs"\n'
CUSTOM = INITRAMFS + '[init]\npath = "./my-init"\n'
MY_INIT = ("#!/bin/sh\nexec /bin/sh\n", 0o644)
HOST_BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox").resolve()


def members(path: Path) -> dict[str, ArchiveMember]:
    return {member.path: member for member in read_archive(path)}


def test_custom_mode_copies_the_file_to_init_and_adds_no_agent_or_runtime(
    make_project: MakeProject, assemble: Assemble
) -> None:
    tree = assemble(make_project(CUSTOM, {"my-init": MY_INIT}))
    init = tree.get("/init")
    assert init is not None and init.kind == "file"
    assert (init.data, init.mode) == (MY_INIT[0].encode(), 0o755)
    assert "/opt/volant" not in tree and "/opt" not in tree
    assert tree.get("/bin/busybox") is not None and tree.get("/bin/sh") is not None


def test_custom_mode_accepts_an_in_image_path_that_a_mapping_provides(
    make_project: MakeProject, assemble: Assemble
) -> None:
    # upstream's documented example: init.path names where a mapping puts the script
    config = (
        INITRAMFS
        + '[init]\npath = "/usr/local/bin/my-init.sh"\n'
        + '[mappings]\n"./my-init.sh" = "/usr/local/bin/my-init.sh"\n'
    )
    tree = assemble(make_project(config, {"my-init.sh": ("#!/bin/sh\necho mapped\n", 0o755)}))
    init = tree.get("/init")
    assert init is not None and init.data == b"#!/bin/sh\necho mapped\n" and init.mode == 0o755


def test_custom_mode_with_a_missing_file_names_it(
    make_project: MakeProject, assemble: Assemble
) -> None:
    with pytest.raises(FledgeError, match=r"init.path: './my-init' does not exist \(resolved to"):
        assemble(make_project(CUSTOM))


def test_none_mode_uses_the_mapped_init(make_project: MakeProject, assemble: Assemble) -> None:
    config = INITRAMFS + '[init]\nnone = true\n[mappings]\n"sup" = "/init"\n'
    tree = assemble(make_project(config, {"sup": ("#!/bin/sh\n", 0o700)}))
    init = tree.get("/init")
    assert init is not None and (init.data, init.mode) == (b"#!/bin/sh\n", 0o700)
    assert "/opt/volant/kestrel.pyz" not in tree


def test_none_mode_without_an_init_mapping_is_a_config_error(
    make_project: MakeProject, assemble: Assemble
) -> None:
    config = INITRAMFS + '[init]\nnone = true\n[mappings]\n"sup" = "/sbin/sup"\n'
    with pytest.raises(FledgeError) as info:
        assemble(make_project(config, {"sup": "x"}))
    assert str(info.value).startswith("invalid config:\n")
    assert "mappings: [init] none = true needs a mapping to /init" in str(info.value)


def test_agent_is_forbidden_in_custom_mode(make_project: MakeProject) -> None:
    config = CUSTOM + '[agent]\nsource_strategy = "bundled"\n'
    with pytest.raises(FledgeError, match=r"agent: section cannot be specified with custom"):
        build(make_project(config, {"my-init": MY_INIT}))


def test_the_skeleton(make_project: MakeProject, tmp_path: Path, cache_dir: Path) -> None:
    config = make_project(CUSTOM, {"my-init": MY_INIT})
    result = build(config, BuildOptions(output_dir=tmp_path / "out", cache_dir=cache_dir))
    image = members(result.artifact)
    assert image["etc/passwd"].data == PASSWD.encode()
    assert PASSWD.startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert image["etc/group"].data == GROUP.encode()
    assert image["etc/hosts"].data == HOSTS.encode()
    assert HOSTS.startswith("127.0.0.1\tlocalhost\n")
    modes = {path: (m.kind, m.permissions) for path, m in image.items()}
    assert modes["tmp"] == ("dir", 0o1777)
    assert modes["root"] == ("dir", 0o700)
    for folder in ("proc", "sys", "dev", "run", "bin", "sbin", "usr/bin", "usr/sbin"):
        assert modes[folder][0] == "dir"
    assert (image["dev/console"].kind, image["dev/console"].rdev) == ("chardev", (5, 1))
    assert image["dev/console"].permissions == 0o600
    assert (image["dev/null"].kind, image["dev/null"].rdev) == ("chardev", (1, 3))
    assert image["dev/null"].permissions == 0o666
    assert image["bin/sh"].target == "busybox"
    assert image["sbin/ifconfig"].target == "../bin/busybox"
    assert image["usr/bin/wget"].target == "../../bin/busybox"
    assert all((m.uid, m.gid, m.mtime) == (0, 0, 0) for m in image.values())
    assert list(image) == sorted(image)


def test_rebuilds_are_byte_identical(
    make_project: MakeProject, tmp_path: Path, cache_dir: Path
) -> None:
    files = {"my-init": MY_INIT, "www/index.html": "<h1>hi</h1>", "www/app.sh": ("x", 0o755)}
    config = make_project(CUSTOM + '[mappings]\n"www" = "/var/www"\n', files)
    first = build(config, BuildOptions(output_dir=tmp_path / "one", cache_dir=cache_dir))
    for path in (config.parent / "www").rglob("*"):  # new mtimes, same content
        os.utime(path, (1, 1))
    second = build(config, BuildOptions(output_dir=tmp_path / "two", cache_dir=cache_dir))
    assert first.artifact.read_bytes() == second.artifact.read_bytes()
    assert first.sha256 == second.sha256
    moved = shutil.copytree(config.parent, tmp_path / "elsewhere" / "project")
    third = build(
        moved / "fledge.toml", BuildOptions(output_dir=tmp_path / "three", cache_dir=cache_dir)
    )
    assert third.artifact.read_bytes() == first.artifact.read_bytes()


@pytest.mark.parametrize(
    ("compression", "name", "fmt", "magic"),
    [
        ("zstd", "plugin.cpio.zst", "cpio.zst", b"\x28\xb5\x2f\xfd"),
        ("gzip", "plugin.cpio.gz", "cpio.gz", b"\x1f\x8b"),
        ("none", "plugin.cpio", "cpio", b"070701"),
    ],
)
def test_compression_variants_read_back(
    make_project: MakeProject,
    tmp_path: Path,
    cache_dir: Path,
    compression: str,
    name: str,
    fmt: str,
    magic: bytes,
) -> None:
    config = make_project(
        CUSTOM + f'[initramfs]\ncompression = "{compression}"\n', {"my-init": MY_INIT}
    )
    result = build(config, BuildOptions(output_dir=tmp_path / "out", cache_dir=cache_dir))
    assert result.artifact == tmp_path / "out" / name
    assert result.artifact.read_bytes().startswith(magic)
    assert result.manifest.initramfs is not None and result.manifest.initramfs.format == fmt
    image = members(result.artifact)
    assert image["init"].data == MY_INIT[0].encode()
    assert image["bin/busybox"].data == HOST_BUSYBOX.read_bytes()
    assert len(image) == result.entries
    libarchive = pytest.importorskip("libarchive")  # an independent reader agrees
    with libarchive.file_reader(str(result.artifact)) as archive:
        names = {entry.pathname: (entry.isdir, entry.issym, entry.size) for entry in archive}
    assert set(names) == set(image)
    assert names["bin/sh"][1] and names["tmp"][0]
    assert names["bin/busybox"][2] == HOST_BUSYBOX.stat().st_size


def test_the_manifest_carries_the_artifact_and_its_sha256(
    make_project: MakeProject, tmp_path: Path, cache_dir: Path
) -> None:
    config = make_project(CUSTOM, {"my-init": MY_INIT}, folder="My Plugin")
    result = build(config, BuildOptions(output_dir=tmp_path / "out", cache_dir=cache_dir))
    assert result.manifest_path == tmp_path / "out" / "plugin.manifest.json"
    written = json.loads(result.manifest_path.read_text())
    digest = hashlib.sha256(result.artifact.read_bytes()).hexdigest()
    assert written["initramfs"] == {
        "url": str(result.artifact),
        "checksum": f"sha256:{digest}",
        "format": "cpio.zst",
    }
    assert (written["name"], written["version"], written["runtime"]) == (
        "my-plugin",
        "0.1.0",
        "my-plugin",
    )
    assert result.notes and "no manifest.toml" in result.notes[0]
    loaded = load_manifest(result.manifest_path)  # volantd's parser accepts it
    assert loaded.initramfs is not None and loaded.initramfs.checksum == f"sha256:{digest}"


def test_the_manifest_template_next_to_the_config_and_flags(
    make_project: MakeProject, tmp_path: Path, cache_dir: Path
) -> None:
    template = (
        'schema_version = "v1"\nname = "webserver"\nversion = "1.0.0"\n'
        '[workload]\nentrypoint = "/usr/bin/webserver"\nargs = ["-v"]\n'
        "[env]\nLOG_LEVEL = 'info'\n"
    )
    config = make_project(CUSTOM, {"my-init": MY_INIT, "manifest.toml": template})
    result = build(config, BuildOptions(output_dir=tmp_path / "a", cache_dir=cache_dir))
    manifest = result.manifest
    assert (manifest.name, manifest.version, manifest.runtime) == (
        "webserver",
        "1.0.0",
        "webserver",
    )
    assert manifest.workload is not None and manifest.workload.argv == ["/usr/bin/webserver", "-v"]
    assert manifest.workload.env == {"LOG_LEVEL": "info"}
    assert result.notes == ()
    renamed = build(
        config,
        BuildOptions(output_dir=tmp_path / "b", cache_dir=cache_dir, name="web2", version="2.0"),
    )
    assert (renamed.manifest.name, renamed.manifest.runtime) == ("web2", "web2")
    assert renamed.manifest.labels["volant.plugin"] == "web2"
    assert renamed.manifest.version == "2.0"


def test_manifest_problems_are_errors(
    make_project: MakeProject, tmp_path: Path, cache_dir: Path
) -> None:
    config = make_project(CUSTOM, {"my-init": MY_INIT})
    options = BuildOptions(output_dir=tmp_path / "out", cache_dir=cache_dir)
    with pytest.raises(FledgeError, match=r"manifest template not found: .*nope.toml"):
        build(config, BuildOptions(manifest=tmp_path / "nope.toml"))
    with pytest.raises(FledgeError, match=r"generated plugin manifest is invalid"):
        build(config, BuildOptions(output_dir=options.output_dir, name="Bad_Name"))
    assert not (tmp_path / "out").exists()  # nothing half-written
    rootfs = tmp_path / "rootfs.toml"
    rootfs.write_text('name = "x"\nversion = "1"\n[rootfs]\nurl = "disk.img"\n')
    with pytest.raises(FledgeError, match=r"the template sets \[rootfs\]"):
        build(config, BuildOptions(output_dir=options.output_dir, manifest=rootfs))


def test_oci_rootfs_from_a_dockerfile_is_not_built_yet(make_project: MakeProject) -> None:
    config = make_project(
        'version = "1"\nstrategy = "oci_rootfs"\n[source]\ndockerfile = "Dockerfile"\n',
        {"Dockerfile": "FROM scratch\n"},
    )
    with pytest.raises(FledgeError, match=r"source.dockerfile is not supported by fledge build"):
        build(config)


def test_a_missing_or_invalid_config(tmp_path: Path, make_project: MakeProject) -> None:
    with pytest.raises(FledgeError, match=r"config file not found: .*fledge.toml"):
        build(tmp_path / "fledge.toml")
    config = make_project('version = "1"\nstrategy = "initramfs"\ncolour = "blue"\n')
    with pytest.raises(FledgeError, match=r"colour: unknown key 'colour'"):
        build(config)
