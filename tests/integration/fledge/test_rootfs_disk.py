"""Root disks from OCI layers: ext4 (mkfs.ext4 -d + debugfs), squashfs, sizing, and the
oci_rootfs build pipeline with its cache.

Images are checked with the e2fsprogs and squashfs-tools readers (``debugfs -R stat``,
``e2fsck -fn``, ``unsquashfs -lln``), never by mounting. The non-root cases run the build in
a child process as uid/gid 65534 (``setpriv``), as an ordinary user's build would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fledge.errors import FledgeError
from fledge.initramfs import BuildOptions, load_config
from fledge.oci.image import Layer, PulledImage
from fledge.oci.unpack import apply_layers
from fledge.rootfs.builder import RootfsBuilder, RootfsBuildResult
from fledge.rootfs.disk import MIB, build_disk_image
from fledge.rootfs.inspect import list_disk_image
from fledge.rootfs.staging import StagingTree
from pluginspec import FilesystemConfig, load_manifest
from support.layers import (
    CAP_NET_RAW,
    LayerFile,
    chardev,
    fifo,
    file,
    folder,
    hardlink,
    make_layer,
    opaque,
    symlink,
    whiteout,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("debugfs", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) is None,
        reason="e2fsprogs is not installed",
    ),
]

AS_ROOT = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
SBIN = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")
NOBODY = 65534
EPOCH = 1_704_164_645


def base_layers(blobs: Path) -> list[LayerFile]:
    lower = make_layer(
        blobs,
        [
            folder("etc"),
            file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            file("etc/motd", "lower"),
            folder("tmp", 0o1777),
            folder("root", 0o700),
            folder("usr/bin"),
            symlink("bin", "usr/bin"),
            file("usr/bin/ping", "elf", 0o4755, xattrs=(("security.capability", CAP_NET_RAW),)),
            hardlink("usr/bin/ping6", "usr/bin/ping"),
            folder("srv", 0o750, uid=33, gid=33),
            file("srv/index.html", "hello", 0o640, uid=33, gid=33),
            file("srv/tagged", "t", xattrs=(("user.origin", b"layer"),)),
            chardev("dev/null", 1, 3),
            fifo("run/ctl"),
            file("var/cache/old", "old"),
        ],
        compression="gzip",
    )
    upper = make_layer(
        blobs,
        [whiteout("etc/motd"), opaque("var/cache"), file("var/cache/new", "new")],
        compression="zstd",
    )
    return [lower, upper]


def debugfs(image: Path, command: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", command, str(image)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": SBIN},
        check=True,
    )
    return done.stdout


def ext4_stat(image: Path, path: str) -> dict[str, str]:
    text = debugfs(image, f'stat "{path}"')
    fields = {}
    for key, pattern in {
        "type": r"Type:\s+(\S+(?: special)?)",
        "mode": r"Mode:\s+(\d+)",
        "user": r"User:\s+(\d+)",
        "group": r"Group:\s+(\d+)",
        "inode": r"Inode:\s+(\d+)",
        "links": r"Links:\s+(\d+)",
        "device": r"Device major/minor number:\s+(\d+:\d+)",
    }.items():
        match = re.search(pattern, text)
        if match:
            fields[key] = match.group(1)
    fields["text"] = text
    return fields


def check_ext4(image: Path) -> None:
    fsck = subprocess.run(
        ["e2fsck", "-fn", str(image)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": SBIN},
        check=False,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    ping = ext4_stat(image, "/usr/bin/ping")
    assert (ping["type"], ping["mode"], ping["user"]) == ("regular", "04755", "0")
    assert "security.capability (20) = 01 00 00 02 00 20 00 00" in ping["text"]
    assert ext4_stat(image, "/usr/bin/ping6")["inode"] == ping["inode"]
    assert ping["links"] == "2"
    assert ext4_stat(image, "/tmp")["mode"] == "01777"
    assert ext4_stat(image, "/root")["mode"] == "0700"
    srv = ext4_stat(image, "/srv")
    assert (srv["mode"], srv["user"], srv["group"]) == ("0750", "33", "33")
    index = ext4_stat(image, "/srv/index.html")
    assert (index["mode"], index["user"], index["group"]) == ("0640", "33", "33")
    assert 'user.origin (5) = "layer"' in ext4_stat(image, "/srv/tagged")["text"]
    null = ext4_stat(image, "/dev/null")
    assert null["type"] == "character special" and null["device"] == "01:03"
    assert ext4_stat(image, "/run/ctl")["type"] == "FIFO"
    assert ext4_stat(image, "/bin")["type"] == "symlink"
    assert (
        "File not found"
        in subprocess.run(
            ["debugfs", "-R", 'stat "/etc/motd"', str(image)],
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": SBIN},
            check=False,
        ).stderr
    )
    listing = debugfs(image, 'ls "/var/cache"')
    assert "new" in listing and "old" not in listing
    assert debugfs(image, 'cat "/srv/index.html"') == "hello"


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A scratch folder every user can write (for the uid 65534 child)."""
    path = Path(tempfile.mkdtemp(prefix="fledge-rootfs-test-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def build_tree(tmp: Path, fstype: str, **config: object) -> Path:
    root = tmp / "staging"
    root.mkdir()
    with StagingTree(root) as tree:
        apply_layers(base_layers(tmp / "blobs"), tree)
        image = tmp / f"rootfs.{fstype}"
        build_disk_image(
            tree, image, FilesystemConfig(type=fstype, **config), key="ab" * 32, epoch=EPOCH
        )
    return image


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_rootfs_disk import build_tree
    build_tree(Path(sys.argv[1]), sys.argv[2])
    """
)


def build_as_nobody(tmp: Path, fstype: str) -> Path:
    tests = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PATH": SBIN,
        "PYTHONPATH": os.pathsep.join([str(tests), str(Path(__file__).parent)]),
        "HOME": str(tmp),
    }
    done = subprocess.run(
        [
            SETPRIV or "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            *(sys.executable, "-c", CHILD, str(tmp), fstype, str(tests)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / f"rootfs.{fstype}"


# --- ext4 ----------------------------------------------------------------------------------


def test_ext4_keeps_ownership_modes_links_xattrs_and_devices(world_tmp: Path) -> None:
    image = build_tree(world_tmp, "ext4")
    check_ext4(image)


@pytest.mark.skipif(not AS_ROOT or SETPRIV is None, reason="needs root to switch to uid 65534")
def test_ext4_built_by_an_ordinary_user_keeps_ownership_too(world_tmp: Path) -> None:
    image = build_as_nobody(world_tmp, "ext4")
    assert image.stat().st_uid == NOBODY
    check_ext4(image)


def test_ext4_size_is_the_minimum_plus_the_buffer(world_tmp: Path) -> None:
    root = world_tmp / "staging"
    root.mkdir()
    layer = make_layer(world_tmp / "blobs", [file("big", os.urandom(3 * MIB))])
    with StagingTree(root) as tree:
        apply_layers([layer], tree)
        small = build_disk_image(
            tree, world_tmp / "a.img", FilesystemConfig(type="ext4", size_buffer_mb=16), key="1"
        )
        large = build_disk_image(
            tree, world_tmp / "b.img", FilesystemConfig(type="ext4", size_buffer_mb=200), key="1"
        )
        auto = build_disk_image(tree, world_tmp / "c.img", FilesystemConfig(type="ext4"), key="1")
    assert small.buffer_bytes == 16 * MIB and auto.buffer_bytes == 64 * MIB
    for image, buffer, slack in ((small, 16, 16), (large, 200, 40), (auto, 64, 24)):
        # shrunk to the minimum (file data, journal sized for the final size, one inode
        # table) plus the buffer, which is free space
        assert image.size < (3 + buffer + slack) * MIB, image
        free = re.search(r"Free blocks:\s+(\d+)", debugfs(image.path, "stats"))
        assert free is not None and int(free.group(1)) * 4096 >= buffer * MIB
    assert large.path.stat().st_blocks * 512 < 100 * MIB  # sparse


def test_preallocate_allocates_the_whole_file(world_tmp: Path) -> None:
    root = world_tmp / "staging"
    root.mkdir()
    with StagingTree(root) as tree:
        apply_layers([make_layer(world_tmp / "blobs", [file("a", "x")])], tree)
        image = build_disk_image(
            tree,
            world_tmp / "p.img",
            FilesystemConfig(type="ext4", size_buffer_mb=8, preallocate=True),
            key="2",
        )
    assert image.path.stat().st_blocks * 512 >= image.size


# --- squashfs ------------------------------------------------------------------------------


def unsquashfs(image: Path) -> dict[str, str]:
    done = subprocess.run(
        ["unsquashfs", "-lln", str(image)], capture_output=True, text=True, check=True
    )
    lines = {}
    for line in done.stdout.splitlines():
        if " squashfs-root" in line:
            path = line.split(" squashfs-root", 1)[1].split(" -> ")[0]
            lines[path or "/"] = line
    return lines


def check_squashfs(image: Path) -> None:
    listing = unsquashfs(image)
    assert listing["/usr/bin/ping"].startswith("-rwsr-xr-x 0/0")
    assert listing["/tmp"].startswith("drwxrwxrwt 0/0")
    assert listing["/srv"].startswith("drwxr-x--- 33/33")
    assert listing["/srv/index.html"].startswith("-rw-r----- 33/33")
    assert listing["/dev/null"].startswith("crw-rw-rw- 0/0") and "1,  3" in listing["/dev/null"]
    assert listing["/run/ctl"].startswith("prw-------")
    assert "-> usr/bin" in listing["/bin"]
    assert "/etc/motd" not in listing
    assert "/var/cache/new" in listing and "/var/cache/old" not in listing


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="squashfs-tools not installed")
def test_squashfs_keeps_ownership_modes_links_and_devices_reproducibly(
    world_tmp: Path,
) -> None:
    image = build_tree(world_tmp, "squashfs")
    check_squashfs(image)
    again = world_tmp / "again"
    again.mkdir()
    assert build_tree(again, "squashfs").read_bytes() == image.read_bytes()


@pytest.mark.skipif(
    not AS_ROOT or SETPRIV is None or shutil.which("mksquashfs") is None,
    reason="needs root to switch to uid 65534, and squashfs-tools",
)
def test_squashfs_built_by_an_ordinary_user_keeps_ownership_too(world_tmp: Path) -> None:
    check_squashfs(build_as_nobody(world_tmp, "squashfs"))


def test_missing_xfs_tools_are_a_clear_error(
    world_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(world_tmp))
    monkeypatch.setattr("fledge.rootfs.disk._SBIN", (str(world_tmp),))
    root = world_tmp / "staging"
    root.mkdir()
    with StagingTree(root) as tree, pytest.raises(FledgeError, match="install the xfsprogs"):
        build_disk_image(tree, world_tmp / "x.img", FilesystemConfig(type="xfs"), key="3")


# --- the pipeline --------------------------------------------------------------------------

IMAGE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-01-02T03:04:05Z",
    "config": {
        "Entrypoint": ["/usr/bin/ping"],
        "Cmd": ["-c", "1", "127.0.0.1"],
        "Env": ["PATH=/usr/bin", "MODE=image"],
        "WorkingDir": "/srv",
        "User": "33:33",
        "ExposedPorts": {"8080/tcp": {}},
        "StopSignal": "SIGINT",
    },
}
DIGEST = "sha256:" + "7" * 64


class FakeRegistry:
    """Stands in for fledge.oci.fetch_image/resolve_digest: the image is local tar layers."""

    def __init__(self, layers: list[LayerFile]) -> None:
        self.layers = layers
        self.fetches = 0
        self.resolves = 0

    def resolve(self, source: object, **options: object) -> str:
        self.resolves += 1
        return DIGEST

    def fetch(self, source: object, **options: object) -> PulledImage:
        self.fetches += 1
        return PulledImage(
            source=str(source),
            manifest_digest=DIGEST,
            config_digest="sha256:" + "8" * 64,
            config=IMAGE_CONFIG,
            layers=[Layer(x.digest, x.media_type, x.size, x.path) for x in self.layers],
            platform="linux/amd64",
        )


def project(folder_path: Path, fstype: str) -> Path:
    folder_path.mkdir(parents=True, exist_ok=True)
    (folder_path / "app.conf").write_text("listen 8080\n")
    (folder_path / "fledge.toml").write_text(
        'version = "1"\nstrategy = "oci_rootfs"\n'
        '[source]\nimage = "registry.example/app:1"\n'
        f'[filesystem]\ntype = "{fstype}"\n'
        '[mappings]\n"app.conf" = "/etc/app/app.conf"\n'
    )
    (folder_path / "manifest.toml").write_text(
        'schema_version = "v1"\nname = "app"\nversion = "1.0.0"\n[env]\nMODE = "template"\n'
    )
    return folder_path / "fledge.toml"


def run_build(config_path: Path, registry: FakeRegistry, cache: Path) -> RootfsBuildResult:
    config = load_config(config_path)
    builder = RootfsBuilder(
        config,
        config_path.parent,
        config_bytes=config_path.read_bytes(),
        cache_dir=cache,
        fetch=registry.fetch,
        resolve=registry.resolve,
    )
    return builder.build(config_path.parent / "build")


def test_oci_rootfs_build_writes_disk_and_manifest_then_hits_the_cache(world_tmp: Path) -> None:
    registry = FakeRegistry(base_layers(world_tmp / "blobs"))
    config_path = project(world_tmp / "project", "ext4")
    first = run_build(config_path, registry, world_tmp / "cache")
    assert not first.cached and first.artifact.name == "plugin.img"
    check_ext4(first.artifact)
    assert debugfs(first.artifact, 'cat "/etc/app/app.conf"') == "listen 8080\n"
    assert ext4_stat(first.artifact, "/etc/app/app.conf")["user"] == "0"
    manifest = load_manifest(first.manifest_path)
    assert manifest.rootfs is not None and manifest.rootfs.fstype == "ext4"
    assert manifest.rootfs.url == str(first.artifact)
    assert manifest.rootfs.checksum == f"sha256:{first.sha256}"
    assert (manifest.image, manifest.image_digest) == ("registry.example/app:1", DIGEST)
    workload = manifest.workload
    assert workload is not None
    assert workload.argv == ["/usr/bin/ping", "-c", "1", "127.0.0.1"]
    assert workload.env == {"PATH": "/usr/bin", "MODE": "template"}
    assert (workload.workdir, workload.user, workload.stop_signal) == ("/srv", "33:33", "SIGINT")
    assert manifest.network is not None
    assert [(e.port, e.protocol) for e in manifest.network.expose] == [(8080, "tcp")]
    assert not list((world_tmp / "project/build").glob(".fledge-rootfs-*"))
    listing = list_disk_image(first.artifact)  # fledge inspect plugin.img
    assert "-rwsr-xr-x 0/0          3 /usr/bin/ping" in listing
    assert any(line.endswith(" /etc/app/app.conf") for line in listing)

    outputs = [first.artifact, first.manifest_path]
    before = [(p.stat().st_mtime_ns, p.stat().st_ino) for p in outputs]
    second = run_build(config_path, registry, world_tmp / "cache")
    assert second.cached and registry.fetches == 1
    assert any("cache hit" in note for note in second.notes)
    assert [(p.stat().st_mtime_ns, p.stat().st_ino) for p in outputs] == before
    assert second.sha256 == first.sha256

    (world_tmp / "project/app.conf").write_text("listen 9090\n")  # a mapped file changed
    third = run_build(config_path, registry, world_tmp / "cache")
    assert not third.cached and registry.fetches == 2
    assert debugfs(third.artifact, 'cat "/etc/app/app.conf"') == "listen 9090\n"


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="squashfs-tools not installed")
def test_oci_rootfs_squashfs_build_and_stale_outputs(world_tmp: Path) -> None:
    registry = FakeRegistry(base_layers(world_tmp / "blobs"))
    config_path = project(world_tmp / "project", "ext4")
    run_build(config_path, registry, world_tmp / "cache")
    project(world_tmp / "project", "squashfs")
    result = run_build(config_path, registry, world_tmp / "cache")
    assert result.artifact.name == "plugin.squashfs" and result.fstype == "squashfs"
    assert not (world_tmp / "project/build/plugin.img").exists()
    check_squashfs(result.artifact)
    assert "drwxr-x--- 33/33" in " ".join(list_disk_image(result.artifact))
    stamp = json.loads((world_tmp / "project/build/plugin.build.json").read_text())
    assert stamp["artifact"] == "plugin.squashfs" and stamp["image_digest"] == DIGEST
    manifest = load_manifest(result.manifest_path)
    assert manifest.rootfs is not None and manifest.rootfs.fstype == "squashfs"


def test_mappings_follow_image_symlinks_only_inside_the_root(world_tmp: Path) -> None:
    sentinel = world_tmp / "sentinel"
    sentinel.mkdir()
    layers = [make_layer(world_tmp / "blobs", [symlink("etc", str(sentinel))])]
    registry = FakeRegistry(layers)
    config_path = project(world_tmp / "project", "ext4")
    result = run_build(config_path, registry, world_tmp / "cache")
    assert list(sentinel.iterdir()) == []
    inside = str(sentinel).lstrip("/") + "/app/app.conf"
    assert debugfs(result.artifact, f'cat "/{inside}"') == "listen 8080\n"


def test_build_options_reach_the_fetch(world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    registry = FakeRegistry(base_layers(world_tmp / "blobs"))

    def fetch(source: object, **options: object) -> PulledImage:
        seen.update(options)
        return registry.fetch(source)

    def resolve(source: object, **options: object) -> str:
        return registry.resolve(source)

    monkeypatch.setattr("fledge.oci.image.fetch_image", fetch)
    monkeypatch.setattr("fledge.oci.image.resolve_digest", resolve)
    from fledge.initramfs import build

    config_path = project(world_tmp / "project", "ext4")
    result = build(
        config_path,
        BuildOptions(
            platform="linux/arm64", creds="u:p", insecure_http=True, cache_dir=world_tmp / "c"
        ),
    )
    assert isinstance(result, RootfsBuildResult)
    assert seen["platform"] == "linux/arm64" and seen["creds"] == "u:p"
    assert seen["insecure_http"] is True
