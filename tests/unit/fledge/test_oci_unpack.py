"""Applying OCI layers to a staging root: whiteouts, metadata, and refusing hostile layers.

Layers are hand-made tar blobs (tests/support/layers.py). Every hostile case checks that the
build fails naming the offending path and that a sentinel folder outside the staging root
is untouched.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fledge.errors import FledgeError
from fledge.oci.unpack import apply_layers, layer_compression
from fledge.rootfs.staging import Inode, StagingTree, UnsafePathError
from support.layers import (
    CAP_NET_RAW,
    MEDIA_TYPES,
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

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A host folder outside the staging root that no layer may reach."""
    path = tmp_path / "sentinel"
    path.mkdir()
    (path / "passwd").write_text("host\n")
    return path


def unpack(root: Path, *layers: LayerFile, privileged: bool | None = None) -> StagingTree:
    tree = StagingTree(root, privileged=privileged)
    apply_layers(list(layers), tree)
    return tree


def snapshot(folder_path: Path) -> dict[str, tuple[int, bytes]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder_path):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path.relative_to(folder_path))] = (path.lstat().st_mode, data)
    return found


# --- layers applied in order ---------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_every_layer_compression_is_applied(blobs: Path, root: Path, compression: str) -> None:
    layer = make_layer(blobs, [file("etc/hostname", "box\n")], compression=compression)
    assert layer_compression(layer) == (compression, compression)
    unpack(root, layer)
    assert (root / "etc/hostname").read_text() == "box\n"


def test_compression_comes_from_the_magic_number_when_the_media_type_is_wrong(
    blobs: Path, root: Path
) -> None:
    layer = make_layer(blobs, [file("a", "x")], compression="gzip", media_type=MEDIA_TYPES["none"])
    tree = StagingTree(root)
    stats = apply_layers([layer], tree)
    assert (root / "a").read_text() == "x"
    assert any("media type says uncompressed, the data is gzip" in n for n in stats.notes)


def test_unknown_media_types_and_xz_layers_are_refused(blobs: Path, root: Path) -> None:
    layer = make_layer(blobs, [file("a")], media_type="application/vnd.example.secret+encrypted")
    with pytest.raises(FledgeError, match="is not a layer fledge can apply"):
        unpack(root, layer)
    xz = blobs / "xz"
    xz.write_bytes(b"\xfd7zXZ\x00rest")
    fake = LayerFile("sha256:" + "0" * 64, MEDIA_TYPES["none"], 10, xz)
    with pytest.raises(FledgeError, match="xz-compressed"):
        unpack(root, fake)


def test_later_layers_replace_files_and_folders_merge(blobs: Path, root: Path) -> None:
    lower = make_layer(blobs, [folder("etc", 0o755), file("etc/a", "1"), file("etc/b", "1")])
    upper = make_layer(blobs, [folder("etc", 0o750), file("etc/a", "2")])
    tree = unpack(root, lower, upper)
    assert (root / "etc/a").read_text() == "2"
    assert (root / "etc/b").read_text() == "1"
    assert stat.S_IMODE(tree.table["etc"].mode) == 0o750


def test_a_file_replaces_a_folder_and_a_folder_replaces_a_file(blobs: Path, root: Path) -> None:
    lower = make_layer(blobs, [folder("x"), file("x/inner"), file("y", "file")])
    upper = make_layer(blobs, [file("x", "now a file"), folder("y"), file("y/z", "z")])
    tree = unpack(root, lower, upper)
    assert (root / "x").read_text() == "now a file"
    assert "x/inner" not in tree.table
    assert (root / "y/z").read_text() == "z"


def test_whiteout_removes_a_lower_file_and_a_whole_folder(blobs: Path, root: Path) -> None:
    lower = make_layer(blobs, [file("etc/motd", "hi"), file("opt/app/bin/run"), file("keep")])
    upper = make_layer(blobs, [whiteout("etc/motd"), whiteout("opt/app"), whiteout("nothing")])
    tree = unpack(root, lower, upper)
    assert not (root / "etc/motd").exists() and (root / "etc").is_dir()
    assert not (root / "opt/app").exists()
    assert not any(path.startswith("opt/app") for path in tree.table)
    assert (root / "keep").exists()
    assert not any(".wh." in path for path in tree.table)


def test_opaque_folder_hides_lower_contents_but_keeps_its_own_layer(
    blobs: Path, root: Path
) -> None:
    lower = make_layer(
        blobs, [file("var/lib/app/old"), file("var/lib/app/sub/deep"), file("var/other")]
    )
    upper = make_layer(
        blobs,
        [
            file("var/lib/app/sub/new", "n"),  # before the marker, same layer: kept
            opaque("var/lib/app"),
            file("var/lib/app/after", "a"),
        ],
    )
    tree = unpack(root, lower, upper)
    assert sorted(tree.children("var/lib/app")) == ["after", "sub"]
    assert tree.children("var/lib/app/sub") == ["new"]
    assert (root / "var/other").exists()


# --- metadata ------------------------------------------------------------------------------


def test_modes_ownership_symlinks_and_hardlinks_are_kept(blobs: Path, root: Path) -> None:
    layer = make_layer(
        blobs,
        [
            folder("tmp", 0o1777),
            folder("root", 0o700),
            file("usr/bin/sudo", "elf", 0o4755),
            file("usr/bin/wall", "elf", 0o2755, gid=5),
            folder("home/app", 0o750, uid=1000, gid=1000),
            file("home/app/.profile", "x", 0o600, uid=1000, gid=1000),
            symlink("bin", "usr/bin"),
            symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
            hardlink("usr/bin/sudoedit", "usr/bin/sudo"),
        ],
    )
    tree = unpack(root, layer)
    table = tree.table
    assert table["tmp"].mode == stat.S_IFDIR | 0o1777
    assert table["root"].mode == stat.S_IFDIR | 0o700
    assert table["usr/bin/sudo"].mode == stat.S_IFREG | 0o4755
    assert table["usr/bin/wall"].mode == stat.S_IFREG | 0o2755 and table["usr/bin/wall"].gid == 5
    assert (table["home/app"].uid, table["home/app"].gid) == (1000, 1000)
    assert table["usr/bin/sudoedit"] is table["usr/bin/sudo"]
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert (root / "usr/bin/sudoedit").stat().st_ino == (root / "usr/bin/sudo").stat().st_ino
    assert (root / "usr/bin/sudo").stat().st_mtime == 1_700_000_000
    if AS_ROOT:
        info = (root / "home/app/.profile").stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1000, 1000, 0o600)
        assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
        assert stat.S_IMODE((root / "usr/bin/sudo").stat().st_mode) == 0o4755


def test_xattrs_and_file_capabilities_are_recorded(blobs: Path, root: Path) -> None:
    layer = make_layer(
        blobs,
        [
            file("usr/bin/ping", "elf", 0o755, xattrs=(("security.capability", CAP_NET_RAW),)),
            file("data", "d", xattrs=(("user.origin", b"layer\xff"),)),
        ],
    )
    tree = unpack(root, layer)
    assert tree.table["usr/bin/ping"].xattrs == {"security.capability": CAP_NET_RAW}
    assert tree.table["data"].xattrs == {"user.origin": b"layer\xff"}
    # whatever the staging copy could not take is left for the disk step
    for fixup in tree.fixups():
        assert set(fixup.xattrs) <= set(fixup.inode.xattrs)


def test_device_nodes_and_fifos(blobs: Path, root: Path) -> None:
    layer = make_layer(blobs, [chardev("dev/null", 1, 3), fifo("run/initctl")])
    tree = unpack(root, layer)
    assert tree.table["dev/null"].rdev == (1, 3)
    assert stat.S_ISCHR(tree.table["dev/null"].mode)
    assert stat.S_ISFIFO((root / "run/initctl").lstat().st_mode)
    if AS_ROOT:
        info = (root / "dev/null").lstat()
        assert stat.S_ISCHR(info.st_mode) and os.major(info.st_rdev) == 1
        assert os.minor(info.st_rdev) == 3


def test_unprivileged_staging_keeps_ownership_and_devices_in_the_table(
    blobs: Path, root: Path
) -> None:
    layer = make_layer(
        blobs,
        [
            chardev("dev/console", 5, 1, 0o600),
            folder("srv", 0o500, uid=33, gid=33),
            file("srv/index.html", "hi", 0o400, uid=33, gid=33),
        ],
    )
    tree = unpack(root, layer, privileged=False)
    assert not (root / "dev/console").exists()  # made by the disk step
    fixups = {fixup.path: fixup for fixup in tree.fixups()}
    assert fixups["dev/console"].create
    assert fixups["srv"].mode  # staged 0700 so the build can write into it
    assert fixups["srv/index.html"].inode.uid == 33
    assert (root / "srv/index.html").read_text() == "hi"


# --- hostile layers ------------------------------------------------------------------------

HOSTILE = {
    "dot-dot": ([file("../escape", "x")], "'../escape'"),
    "dot-dot-inside": ([file("etc/../../escape", "x")], "'etc/../../escape'"),
    "absolute": ([file("/etc/passwd", "x")], "'/etc/passwd'"),
    "symlink-to-root-then-write": (
        [symlink("a", "/"), file("a/etc/passwd", "x")],
        "/a is a symlink (-> /)",
    ),
    "hardlink-dot-dot": ([hardlink("stolen", "../../etc/passwd")], "'../../etc/passwd'"),
    "hardlink-absolute": ([hardlink("stolen", "/etc/passwd")], "'/etc/passwd'"),
    "hardlink-missing-target": ([hardlink("b", "not/there")], "the target is not in the image"),
    "whiteout-dot-dot": ([file("a/.wh...")], ".."),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_are_refused_with_the_offending_path(
    blobs: Path, root: Path, sentinel: Path, case: str
) -> None:
    members, expected = HOSTILE[case]
    before = snapshot(sentinel)
    with pytest.raises(UnsafePathError) as raised:
        unpack(root, make_layer(blobs, members))
    assert expected in str(raised.value)
    assert "layer 1/1 (sha256:" in str(raised.value)
    assert snapshot(sentinel) == before
    assert not (root.parent / "escape").exists()


def test_a_symlink_to_a_host_folder_is_never_written_through(
    blobs: Path, root: Path, sentinel: Path
) -> None:
    before = snapshot(sentinel)
    layer = make_layer(blobs, [symlink("etc", str(sentinel)), file("etc/passwd", "pwned")])
    with pytest.raises(UnsafePathError, match=f"/etc is a symlink \\(-> {sentinel}\\)"):
        unpack(root, layer)
    assert snapshot(sentinel) == before


def test_a_symlink_chain_across_layers_is_never_written_through(
    blobs: Path, root: Path, sentinel: Path
) -> None:
    before = snapshot(sentinel)
    lower = make_layer(blobs, [symlink("b", str(sentinel)), symlink("a", "b")])
    upper = make_layer(blobs, [file("a/passwd", "pwned")])
    with pytest.raises(UnsafePathError, match=r"layer 2/2 .*'a/passwd'.*/a is a symlink"):
        unpack(root, lower, upper)
    assert snapshot(sentinel) == before


def test_a_relative_symlink_climbing_out_is_never_written_through(
    blobs: Path, root: Path, sentinel: Path
) -> None:
    before = snapshot(sentinel)
    layer = make_layer(blobs, [symlink("up", "../sentinel"), file("up/passwd", "pwned")])
    with pytest.raises(UnsafePathError, match="'up/passwd'"):
        unpack(root, layer)
    assert snapshot(sentinel) == before


def test_whiteouts_and_hardlinks_through_symlinks_are_refused(
    blobs: Path, root: Path, sentinel: Path
) -> None:
    before = snapshot(sentinel)
    lower = make_layer(blobs, [symlink("s", str(sentinel)), file("real", "r")])
    with pytest.raises(UnsafePathError, match=r"'s/\.wh\.passwd'"):
        unpack(root, lower, make_layer(blobs, [whiteout("s/passwd")]))
    root2 = root.parent / "staging2"
    root2.mkdir()
    with pytest.raises(UnsafePathError, match="-> 's/passwd': the target is not in the image"):
        unpack(root2, lower, make_layer(blobs, [hardlink("copy", "s/passwd")]))
    assert snapshot(sentinel) == before


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(
    blobs: Path, root: Path, sentinel: Path
) -> None:
    before = snapshot(sentinel)
    lower = make_layer(blobs, [symlink("passwd", str(sentinel / "passwd"))])
    upper = make_layer(blobs, [file("passwd", "image's own\n")])
    unpack(root, lower, upper)
    assert not (root / "passwd").is_symlink()
    assert (root / "passwd").read_text() == "image's own\n"
    assert snapshot(sentinel) == before


def test_a_hardlink_to_a_symlink_links_the_symlink_itself(
    blobs: Path, root: Path, sentinel: Path
) -> None:
    layer = make_layer(
        blobs, [symlink("link", str(sentinel / "passwd")), hardlink("other", "link")]
    )
    unpack(root, layer)
    assert os.readlink(root / "other") == str(sentinel / "passwd")
    assert (root / "other").lstat().st_ino == (root / "link").lstat().st_ino


def test_mappings_resolve_image_symlinks_inside_the_root(root: Path, sentinel: Path) -> None:
    tree = StagingTree(root)
    tree.make_symlink("etc", "/data/etc", _link(), "test")
    tree.make_symlink("escape", "../../..", _link(), "test")
    assert tree.resolve_inside("/etc/app.conf", "mapping") == "data/etc/app.conf"
    with pytest.raises(UnsafePathError, match="climbs above the image root"):
        tree.resolve_inside("/escape/x", "mapping")
    tree.make_symlink("host", str(sentinel), _link(), "test")
    # an absolute target is re-rooted: /host/... means <root>/<sentinel path>/...
    assert tree.resolve_inside("/host/passwd", "mapping") == str(sentinel / "passwd").lstrip("/")


def _link() -> Inode:
    return Inode(stat.S_IFLNK | 0o777)
