"""The guest Python runtime is complete: it runs with nothing from the host around it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fledge.runtime import GUEST_PREFIX, LOADER_NAME, python_runtime_entries

pytestmark = pytest.mark.integration

# What kestrel leans on: asyncio, sockets, subprocesses, JSON, HTTP parsing, ctypes (reboot).
PROBE = (
    "import asyncio, ctypes, email.parser, http.client, json, socket, subprocess, sys, zipfile;"
    "print('runtime ok', sys.version_info[:2], sys.prefix)"
)


def materialise(entries, root: Path) -> None:
    """Write archive entries into `root` as the kernel would unpack them."""
    for entry in entries:
        target = root / entry.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "dir":
            target.mkdir(exist_ok=True)
        elif entry.kind == "symlink":
            target.symlink_to(entry.target)
        else:
            target.write_bytes(entry.data)
            target.chmod(entry.mode)


def guest_command(root: str = "") -> list[str]:
    prefix = f"{root}{GUEST_PREFIX}"
    return [
        f"{prefix}/lib/{LOADER_NAME}", "--library-path", f"{prefix}/lib",
        f"{prefix}/bin/python3", "-s", "-S", "-B", "-c", PROBE,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runtime_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guest")
    materialise(python_runtime_entries(), root)
    return root


def test_runtime_holds_interpreter_loader_libc_and_bytecode_stdlib(runtime_root: Path):
    prefix = runtime_root / GUEST_PREFIX.lstrip("/")
    assert (prefix / "bin/python3").stat().st_mode & 0o111
    assert (prefix / "lib" / LOADER_NAME).exists()
    assert (prefix / "lib/libc.so.6").exists()
    stdlib = prefix / "lib/python3.11"
    assert (stdlib / "os.pyc").is_file() and (stdlib / "asyncio/__init__.pyc").is_file()
    assert not list(prefix.rglob("*.py")), "the stdlib ships as bytecode only"
    assert not (stdlib / "unittest").exists() and not (stdlib / "tkinter").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_runtime_runs_in_an_empty_root_with_no_host_libraries(runtime_root: Path):
    result = subprocess.run(
        [shutil.which("chroot") or "chroot", str(runtime_root), *guest_command()],
        env={"PYTHONHOME": GUEST_PREFIX, "PATH": "/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"runtime ok (3, 11) {GUEST_PREFIX}"


def test_runtime_runs_through_its_own_loader_outside_a_chroot(runtime_root: Path):
    result = subprocess.run(
        guest_command(str(runtime_root)),
        env={"PYTHONHOME": f"{runtime_root}{GUEST_PREFIX}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("runtime ok (3, 11)")
