"""Test doubles' inputs for the Cloud Hypervisor driver: a runnable fake `cloud-hypervisor`, and
the smallest kernels CH's PVH check accepts (an ELF with a Xen PHYS32_ENTRY note) or not."""

from __future__ import annotations

import gzip
import json
import struct
import sys
from pathlib import Path
from typing import Any

FAKE = Path(__file__).with_name("fake_cloud_hypervisor.py")
PVH_ENTRY = 0x1000850


def fake_binary(folder: Path) -> Path:
    """An executable `cloud-hypervisor` in `folder` that runs the fake under this Python."""
    binary = folder / "cloud-hypervisor"
    binary.write_text(
        f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE)!r}, run_name='__main__')\n"
    )
    binary.chmod(0o755)
    return binary


def calls(run_dir: Path) -> list[dict[str, Any]]:
    """The API requests the fake received, in order."""
    path = run_dir / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def endpoints(run_dir: Path) -> list[str]:
    return [f"{call['method']} {call['endpoint']}" for call in calls(run_dir)]


def elf_kernel(path: Path, pvh: bool = True) -> Path:
    """An x86-64 ELF executable whose only segment is a PT_NOTE: Xen PHYS32_ENTRY (or GNU)."""
    name = b"Xen\0" if pvh else b"GNU\0"
    note = struct.pack("<III", len(name), 8, 18) + name + struct.pack("<Q", PVH_ENTRY)
    header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, little-endian, version 1, System V ABI
        2, 62, 1, PVH_ENTRY, 64, 0, 0, 64, 56, 1, 64, 0, 0,  # EXEC, x86-64, one phdr at 64
    )  # fmt: skip
    offset = 64 + 56
    phdr = struct.pack("<IIQQQQQQ", 4, 4, offset, 0, 0, len(note), len(note), 4)
    path.write_bytes(header + phdr + note)
    return path


def bzimage(path: Path, vmlinux: bytes, protocol: int = 0x020F) -> Path:
    """A bzImage-shaped file (boot header, one setup sector) carrying `vmlinux` gzipped."""
    payload = gzip.compress(vmlinux) + struct.pack("<I", len(vmlinux))
    setup = bytearray(2 * 512)
    setup[0x1F1] = 1  # setup_sects: the payload area starts at (1 + 1) * 512
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    path.write_bytes(bytes(setup) + payload)
    return path
