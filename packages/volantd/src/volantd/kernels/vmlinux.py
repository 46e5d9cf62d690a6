"""The ELF kernel (vmlinux) inside a bzImage, and whether it has a PVH entry point.

Cloud Hypervisor boots x86-64 kernels only through PVH: an ELF vmlinux with a
``XEN_ELFNOTE_PHYS32_ENTRY`` note. A bzImage carries that very vmlinux, compressed, as its
payload (x86 boot protocol 2.08+: ``payload_offset``/``payload_length``), so a Debian kernel
(``CONFIG_PVH=y``) needs no second download: :func:`extract_vmlinux` unpacks it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import libarchive  # type: ignore[import-untyped]
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from libarchive.exception import ArchiveError  # type: ignore[import-untyped]

from volantd.kernels.errors import KernelImageError
from volantd.kernels.image import ELF_MAGIC, is_bzimage

SETUP_SECTS_OFFSET = 0x1F1
PROTOCOL_OFFSET = 0x206
PAYLOAD_OFFSET_OFFSET = 0x248  # u32 payload_offset, then u32 payload_length
MIN_PAYLOAD_PROTOCOL = 0x0208
XEN_NOTE_NAME = b"Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18


def bzimage_payload(bzimage: Path) -> bytes:
    """The compressed kernel a bzImage carries (gzip, xz, lzma, bzip2, lz4, lzo or zstd)."""
    data = bzimage.read_bytes()
    if not is_bzimage(data[:0x210]):
        raise KernelImageError(f"{bzimage} is not a bzImage")
    (protocol,) = struct.unpack_from("<H", data, PROTOCOL_OFFSET)
    if protocol < MIN_PAYLOAD_PROTOCOL:
        raise KernelImageError(
            f"{bzimage} uses boot protocol {protocol >> 8}.{protocol & 0xFF:02d}, which does not "
            "say where its payload is (2.08 or newer does)"
        )
    setup_sects = data[SETUP_SECTS_OFFSET] or 4
    offset, length = struct.unpack_from("<II", data, PAYLOAD_OFFSET_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(data):
        raise KernelImageError(f"{bzimage}: its payload ({length} bytes at {start}) is not there")
    return data[start : start + length]


def extract_vmlinux(bzimage: Path, dest: Path) -> Path:
    """Unpack the vmlinux of `bzimage` into `dest` (written beside it, then renamed)."""
    payload = bzimage_payload(bzimage)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("wb") as out:
            try:
                with libarchive.memory_reader(payload, "raw", "all") as archive:
                    for entry in archive:
                        for block in entry.get_blocks():
                            out.write(block)
            except ArchiveError as error:
                raise KernelImageError(
                    f"cannot decompress the kernel inside {bzimage}: {error}"
                ) from None
        with tmp.open("rb") as written:
            if written.read(4) != ELF_MAGIC:
                raise KernelImageError(f"the payload of {bzimage} is not an ELF vmlinux")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def pvh_entry(vmlinux: Path) -> int | None:
    """The PVH entry point of an ELF kernel (its XEN_ELFNOTE_PHYS32_ENTRY note), or None."""
    try:
        with vmlinux.open("rb") as file:
            elf = ELFFile(file)
            little = elf.little_endian
            for segment in elf.iter_segments():
                if segment["p_type"] != "PT_NOTE":
                    continue
                for name, kind, desc in _notes(segment.data(), little):
                    if name == XEN_NOTE_NAME and kind == XEN_ELFNOTE_PHYS32_ENTRY:
                        return int.from_bytes(desc[:4], "little" if little else "big")
    except (ELFError, OSError, struct.error) as error:
        raise KernelImageError(f"{vmlinux} is not a readable ELF kernel: {error}") from None
    return None


def _notes(data: bytes, little: bool) -> list[tuple[bytes, int, bytes]]:
    """(name, type, descriptor) of each ELF note in a PT_NOTE segment's data."""
    order = "<" if little else ">"
    notes = []
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(order + "III", data, offset)
        offset += 12
        name = data[offset : offset + namesz].rstrip(b"\0")
        offset += (namesz + 3) & ~3
        desc = data[offset : offset + descsz]
        offset += (descsz + 3) & ~3
        notes.append((name, kind, desc))
    return notes
