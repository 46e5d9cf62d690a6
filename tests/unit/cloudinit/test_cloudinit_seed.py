"""Seed images: an ISO 9660 volume (pycdlib) or a VFAT filesystem (dosfstools + mtools) that
cloud-init's NoCloud datasource finds by its label and reads by the files' real names."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest

from volantd.cloudinit import (
    MAX_DOCUMENT_BYTES,
    SEED_FILENAME,
    CloudInitError,
    SeedDocuments,
    build_seed,
    vfat,
)

DOCUMENTS = SeedDocuments(
    user_data="#cloud-config\nruncmd:\n  - [echo, hello]\n",
    meta_data="instance-id: volant-42\nlocal-hostname: web-1\n",
    network_config="version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
)
FILES = {
    "user-data": DOCUMENTS.user_data,
    "meta-data": DOCUMENTS.meta_data,
    "network-config": DOCUMENTS.network_config,
}
MTOOLS = {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}
needs_vfat_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("mkfs.fat", "mcopy", "mdir", "mtype", "fsck.fat")),
    reason="needs dosfstools and mtools",
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_partial_files(folder: Path) -> bool:
    return [path.name for path in folder.iterdir() if path.name.startswith(".")] == []


# --- iso9660 -------------------------------------------------------------------------------


def read_iso(path: Path, **where: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, **where)
        return out.getvalue()
    finally:
        iso.close()


def test_an_iso_seed_is_labelled_cidata_with_the_files_under_their_real_names(
    tmp_path: Path,
) -> None:
    seed = build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "iso9660")
    assert (seed.path, seed.fstype) == (tmp_path / "cloud-init-seed.img", "iso9660")
    assert seed.sha256 == sha256_of(seed.path)
    iso = pycdlib.PyCdlib()
    iso.open(str(seed.path))
    try:
        assert iso.has_rock_ridge() and iso.has_joliet()
        assert iso.pvd.volume_identifier.rstrip() == b"cidata"
        names = sorted(child.rock_ridge.name() for child in iso.list_children(rr_path="/"))
        assert names == [b".", b"..", b"meta-data", b"network-config", b"user-data"]
        dates = {
            (record.date.years_since_1900, record.date.month, record.date.day_of_month)
            for record in iso.list_children(iso_path="/")
        }
        assert dates == {(100, 1, 1)}  # every record dated 2000-01-01, whenever it was built
    finally:
        iso.close()
    for name, text in FILES.items():
        assert read_iso(seed.path, rr_path=f"/{name}") == text.encode()
        assert read_iso(seed.path, joliet_path=f"/{name}") == text.encode()
    assert read_iso(seed.path, iso_path="/USER_DAT.;1") == FILES["user-data"].encode()


def test_the_same_documents_give_the_same_iso_whenever_and_wherever_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_seed(tmp_path / "first.img", DOCUMENTS, "iso")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 86_400 * 400 + 3_723)
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # pycdlib writes local time with its offset
    time.tzset()
    try:
        second = build_seed(tmp_path / "second.img", DOCUMENTS, "iso9660")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert second.sha256 == first.sha256
    assert second.path.read_bytes() == first.path.read_bytes()


def test_an_iso_seed_without_network_config_has_two_files(tmp_path: Path) -> None:
    documents = SeedDocuments(
        user_data="#cloud-config\n", meta_data="instance-id: x\n", network_config=None
    )
    seed = build_seed(tmp_path / SEED_FILENAME, documents, "iso9660")
    iso = pycdlib.PyCdlib()
    iso.open(str(seed.path))
    try:
        names = sorted(child.rock_ridge.name() for child in iso.list_children(rr_path="/"))
    finally:
        iso.close()
    assert names == [b".", b"..", b"meta-data", b"user-data"]


# --- vfat ----------------------------------------------------------------------------------


def mtools(*command: str) -> str:
    result = subprocess.run(
        command, env={**os.environ, **MTOOLS}, capture_output=True, text=True, check=True
    )
    return result.stdout


@needs_vfat_tools
def test_a_vfat_seed_is_a_whole_disk_fat_labelled_cidata_with_long_names(tmp_path: Path) -> None:
    seed = build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "vfat")
    assert seed.fstype == "vfat" and seed.sha256 == sha256_of(seed.path)
    image = str(seed.path)
    assert seed.path.stat().st_size == 1 << 20
    boot_sector = seed.path.read_bytes()[:512]
    assert boot_sector[510:] == b"\x55\xaa" and boot_sector[54:62] == b"FAT12   "  # no MBR
    assert mtools("mlabel", "-s", "-i", image, "::").strip() == "Volume label is CIDATA"
    listing = mtools("mdir", "-i", image, "::/")
    for name, text in FILES.items():
        assert mtools("mtype", "-i", image, f"::/{name}") == text
        entry = next(line for line in listing.splitlines() if line.endswith(f" {name}"))
        assert f" {len(text.encode())} 2000-01-01   0:00 " in entry  # the fixed date
    assert "Volume Serial Number is 1234-ABCD" in listing
    subprocess.run(["fsck.fat", "-n", image], capture_output=True, check=True)


@needs_vfat_tools
def test_the_same_documents_give_the_same_vfat_image(tmp_path: Path) -> None:
    first = build_seed(tmp_path / "first.img", DOCUMENTS, "vfat")
    second = build_seed(tmp_path / "second.img", DOCUMENTS, "vfat")
    assert second.sha256 == first.sha256


@needs_vfat_tools
def test_a_vfat_seed_has_room_for_three_documents_of_1_mib(tmp_path: Path) -> None:
    big = "#" * (MAX_DOCUMENT_BYTES - 1) + "\n"
    seed = build_seed(tmp_path / SEED_FILENAME, SeedDocuments(big, big, big), "vfat")
    assert mtools("mtype", "-i", str(seed.path), "::/network-config") == big
    assert seed.path.stat().st_size <= 5 << 20


@needs_vfat_tools
def test_without_mkfs_fat_or_mcopy_the_error_names_the_package_and_iso9660(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mcopy = shutil.which("mcopy")
    assert mcopy is not None
    (bin_dir / "mcopy").symlink_to(mcopy)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(vfat, "SYSTEM_DIRS", str(tmp_path / "sbin"))
    previous = build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "iso9660")
    with pytest.raises(CloudInitError) as raised:
        build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "vfat")
    assert "mkfs.fat is required to build a vfat cloud-init seed but was not found" in str(
        raised.value
    )
    assert "apt-get install dosfstools" in str(raised.value)
    assert 'seed_mode to "iso9660"' in str(raised.value)
    assert sha256_of(previous.path) == previous.sha256  # the old seed is left as it was
    (bin_dir / "mcopy").unlink()
    mkfs = shutil.which("mkfs.fat", path=os.defpath + ":/usr/sbin:/sbin")
    assert mkfs is not None
    (bin_dir / "mkfs.fat").symlink_to(mkfs)
    with pytest.raises(CloudInitError, match=r"mcopy is .* apt-get install mtools"):
        build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "vfat")
    assert no_partial_files(tmp_path)


# --- both ----------------------------------------------------------------------------------


@needs_vfat_tools
@pytest.mark.parametrize("first_mode, then_mode", [("vfat", "iso9660"), ("iso9660", "vfat")])
def test_rebuilding_replaces_the_seed_atomically(
    tmp_path: Path, first_mode: str, then_mode: str
) -> None:
    path = tmp_path / "run" / SEED_FILENAME
    build_seed(path, DOCUMENTS, first_mode)
    old_inode = path.stat().st_ino
    changed = SeedDocuments("#cloud-config\nhostname: other\n", DOCUMENTS.meta_data, None)
    seed = build_seed(path, changed, then_mode)
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one
    assert seed.sha256 == sha256_of(path) and seed.fstype == then_mode
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)  # user-data may hold secrets
    assert no_partial_files(path.parent)
    if then_mode == "vfat":
        assert mtools("mtype", "-i", str(path), "::/user-data") == changed.user_data
    else:
        assert read_iso(path, rr_path="/user-data") == changed.user_data.encode()


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CloudInitError, match=r"cloud_init\.seed_mode: 'ext4' is not"):
        build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "ext4")
    assert list(tmp_path.iterdir()) == []


@needs_vfat_tools
def test_mkfs_fat_is_found_in_sbin_when_path_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mkfs, mcopy = shutil.which("mkfs.fat"), shutil.which("mcopy")
    assert mkfs is not None and mcopy is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mcopy").symlink_to(mcopy)
    monkeypatch.setenv("PATH", str(bin_dir))  # an ordinary user's PATH has no sbin
    monkeypatch.setattr(vfat, "SYSTEM_DIRS", str(Path(mkfs).parent))
    assert build_seed(tmp_path / SEED_FILENAME, DOCUMENTS, "vfat").fstype == "vfat"
