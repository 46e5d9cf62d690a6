"""The fledge command line, run as a real process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fledge.cli import StepDisplay
from fledge.oci.image import TransferProgress

FLEDGE = Path(sys.executable).parent / "fledge"
CUSTOM = 'version = "1"\nstrategy = "initramfs"\n[init]\npath = "./my-init"\n'


def fledge(*args: str | Path, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLEDGE), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "FLEDGE_CACHE_DIR": str(cache), "COLUMNS": "200"},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    root.mkdir()
    (root / "fledge.toml").write_text(CUSTOM + '[mappings]\n"www" = "/var/www"\n')
    (root / "my-init").write_text("#!/bin/sh\nexec /bin/sh\n")
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("<h1>hello</h1>\n")
    (root / "manifest.toml").write_text('name = "demo"\nversion = "1.2.3"\n')
    return root


def test_build_prints_steps_and_a_summary(project: Path, cache_dir: Path) -> None:
    result = fledge("build", cwd=project, cache=cache_dir)
    assert result.returncode == 0, result.stderr
    artifact = project / "build" / "plugin.cpio.zst"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("built plugin.cpio.zst (initramfs, custom init mode) in ")
    assert lines[1] == f"  artifact  {artifact}"
    assert lines[2].startswith("  size      ") and "(zstd; " in lines[2]
    assert lines[3].startswith("  sha256    ") and len(lines[3].split()[1]) == 64
    assert lines[4].startswith("  entries   ")
    assert lines[5] == f"  manifest  {project / 'build' / 'plugin.manifest.json'} (demo 1.2.3)"
    for step in ("config", "skeleton", "busybox", "init (custom)", "mappings (1)", "archive"):
        assert f"✓ {step}" in result.stderr
    assert artifact.is_file()


def test_build_with_options(project: Path, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    result = fledge(
        "build",
        "-c",
        project / "fledge.toml",
        "-o",
        out,
        "--name",
        "other",
        "--version",
        "9",
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr
    assert f"manifest  {out / 'plugin.manifest.json'} (other 9)" in result.stdout


def test_inspect_lists_the_members(project: Path, cache_dir: Path) -> None:
    assert fledge("build", cwd=project, cache=cache_dir).returncode == 0
    result = fledge("inspect", "build/plugin.cpio.zst", cwd=project, cache=cache_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "crw------- 0/0        5,1 /dev/console" in lines
    assert "crw-rw-rw- 0/0        1,3 /dev/null" in lines
    assert "drwxrwxrwt 0/0          0 /tmp" in lines
    assert "-rwxr-xr-x 0/0         23 /init" in lines
    assert "lrwxrwxrwx 0/0          7 /bin/sh -> busybox" in lines
    assert "-rw-r--r-- 0/0         15 /var/www/index.html" in lines
    assert [line.split()[-1] for line in lines if "->" not in line] == sorted(
        line.split()[-1] for line in lines if "->" not in line
    )
    assert result.stderr.startswith(f"{len(lines)} entries, ")


def test_inspect_of_something_else_fails_cleanly(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = fledge("inspect", "notes.txt", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 1
    assert result.stderr == (
        "error: notes.txt: not a cpio archive (no newc, gzip or zstd magic number)\n"
    )


def test_a_bad_config_is_one_clear_error_without_a_traceback(
    project: Path, cache_dir: Path
) -> None:
    (project / "fledge.toml").write_text('version = "1"\nstrategy = "initramfs"\n[agent]\n')
    result = fledge("build", cwd=project, cache=cache_dir)
    assert result.returncode == 1
    assert "error: invalid config:\n" in result.stderr
    assert "fledge.toml: agent.source_strategy: is required" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_mapping_escape_fails_the_build(project: Path, cache_dir: Path) -> None:
    (project / "www" / "passwd").symlink_to("/etc/passwd")
    result = fledge("build", cwd=project, cache=cache_dir)
    assert result.returncode == 1
    assert "www/passwd -> /etc/passwd is absolute" in result.stderr
    assert "✗ mappings (1)" in result.stderr
    assert not (project / "build" / "plugin.cpio.zst").exists()


def test_oci_rootfs_with_a_missing_layout_exits_1(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "fledge.toml").write_text(
        'version = "1"\nstrategy = "oci_rootfs"\n[source]\nimage = "oci-layout:./missing"\n'
    )
    result = fledge("build", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 1
    assert "error:" in result.stderr and str(tmp_path / "missing") in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_exit_codes(project: Path, cache_dir: Path) -> None:
    ok = fledge("validate", cwd=project, cache=cache_dir)
    assert (ok.returncode, ok.stdout) == (0, "fledge.toml: ok (fledge-config)\n")
    (project / "bad.fledge.toml").write_text('version = "2"\nstrategy = "initramfs"\n')
    bad = fledge("validate", "fledge.toml", "bad.fledge.toml", cwd=project, cache=cache_dir)
    assert bad.returncode == 1
    assert "bad.fledge.toml: invalid (fledge-config): 1 error" in bad.stderr
    assert "unsupported config version '2', expected '1'" in bad.stderr


def test_the_build_display_shows_each_download_with_its_bytes() -> None:
    """`fledge build` gives every layer being pulled a line that counts its bytes."""
    output = io.StringIO()
    with StepDisplay(Console(file=output, width=100)) as display:
        assert isinstance(display, TransferProgress)  # what fetch_image looks for
        display.step("fetch example:latest")
        display.transfer("sha256:0123456789ab", 1 << 20, 3 << 20)
        display.transfer("sha256:ba9876543210", 512, None)
        display.transfer("sha256:0123456789ab", 3 << 20, 3 << 20)
    shown = output.getvalue()
    assert "sha256:0123456789ab 3.0 MiB of 3.0 MiB" in shown
    assert "sha256:ba9876543210 512 B" in shown
    assert shown.count("sha256:0123456789ab") == 1  # one line per blob, updated in place
