"""volantd's cached boot initramfs: built once per key, atomically, under a lock."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from typer.testing import CliRunner

from support.archives import cpio_files
from volantd.boot.bootimage import BOOT_IMAGE_DIR, boot_initramfs, ensure_boot_initramfs
from volantd.cli import app


def test_the_first_call_builds_it_and_later_ones_reuse_it(tmp_path: Path) -> None:
    first = ensure_boot_initramfs(tmp_path)
    assert first.built and first.path == tmp_path / BOOT_IMAGE_DIR / f"{first.key}.cpio"
    stamp = first.path.stat().st_mtime_ns
    again = ensure_boot_initramfs(tmp_path)
    assert not again.built and again.path == first.path
    assert first.path.stat().st_mtime_ns == stamp
    assert boot_initramfs(tmp_path) == first.path
    files = cpio_files(first.path)  # plain cpio: copied into each VM's initrd as is
    assert {"/init", "/opt/volant/kestrel.pyz", "/opt/volant/python/bin/python3"} <= set(files)


def test_a_new_key_replaces_the_images_of_older_ones(tmp_path: Path) -> None:
    folder = tmp_path / BOOT_IMAGE_DIR
    folder.mkdir()
    (folder / "0123456789abcdef01234567.cpio").write_bytes(b"an older volantd's image")
    built = ensure_boot_initramfs(tmp_path)
    assert sorted(p.name for p in folder.glob("*.cpio")) == [built.path.name]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"] == []


def test_concurrent_first_starts_build_it_once(tmp_path: Path) -> None:
    results = []

    def start() -> None:
        results.append(ensure_boot_initramfs(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({result.path for result in results}) == 1
    assert sum(result.built for result in results) == 1


def test_rebuild_writes_a_fresh_copy(tmp_path: Path) -> None:
    first = ensure_boot_initramfs(tmp_path)
    os.utime(first.path, ns=(0, 0))
    rebuilt = ensure_boot_initramfs(tmp_path, rebuild=True)
    assert rebuilt.built and rebuilt.path.stat().st_mtime_ns != 0


def test_volantd_boot_image_build_prebuilds_it_for_a_home(tmp_path: Path) -> None:
    runner = CliRunner()
    built = runner.invoke(app, ["boot-image", "build", "--home", str(tmp_path), "--json"])
    assert built.exit_code == 0, built.output
    result = json.loads(built.output)
    assert result["built_s"] > 0 and Path(result["path"]).is_file()
    assert Path(result["path"]).parent == tmp_path / "cache" / BOOT_IMAGE_DIR
    again = runner.invoke(app, ["boot-image", "build", "--home", str(tmp_path)])
    assert again.exit_code == 0 and "already built" in again.output
    where = runner.invoke(app, ["boot-image", "path", "--home", str(tmp_path)])
    assert where.output.strip() == result["path"]
