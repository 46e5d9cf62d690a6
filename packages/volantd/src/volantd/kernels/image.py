"""Recognising a kernel image (bzImage or vmlinux) and reading its version."""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from volantd.kernels.errors import KernelImageError

# x86 boot protocol (Documentation/arch/x86/boot.rst): offsets into the real-mode header.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
BZIMAGE_PROTOCOL_OFFSET = 0x206
BZIMAGE_VERSION_POINTER_OFFSET = 0x20E
BZIMAGE_VERSION_BASE = 0x200  # the pointer is relative to the start of the setup code
ELF_MAGIC = b"\x7fELF"
LINUX_BANNER = re.compile(rb"Linux version ([^\s%\x00]+) ")
EXPECTED = "a bzImage (x86 boot header 'HdrS' at 0x202) or a vmlinux (x86-64 ELF)"


class ImageFormat(StrEnum):
    BZIMAGE = "bzImage"
    VMLINUX = "vmlinux"


@dataclass(frozen=True)
class KernelImage:
    """A recognised kernel image: its format and its release (what `uname -r` prints)."""

    format: ImageFormat
    version: str


def is_bzimage(header: bytes) -> bool:
    return header[BZIMAGE_MAGIC_OFFSET : BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC


def bzimage_version(header: bytes) -> str | None:
    """The release from a bzImage's kernel_version string, or None if the header has none.

    `header` is the start of the file, at least up to the end of the version string.
    """
    if not is_bzimage(header) or len(header) < BZIMAGE_VERSION_POINTER_OFFSET + 2:
        return None
    (protocol,) = struct.unpack_from("<H", header, BZIMAGE_PROTOCOL_OFFSET)
    (pointer,) = struct.unpack_from("<H", header, BZIMAGE_VERSION_POINTER_OFFSET)
    if protocol < 0x0200 or pointer == 0:
        return None
    start = BZIMAGE_VERSION_BASE + pointer
    end = header.find(b"\0", start)
    if end < 0:
        return None
    words = header[start:end].decode("ascii", "replace").split()
    return words[0] if words else None


def _vmlinux_version(path: Path) -> str | None:
    # vmlinux files with debug info are hundreds of MB: search the banner through mmap.
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        match = LINUX_BANNER.search(data)
        return bytes(match.group(1)).decode("ascii", "replace") if match else None


def inspect_kernel_image(path: Path) -> KernelImage:
    """Recognise `path` as a bzImage or an x86-64 vmlinux and read its kernel release."""
    if not path.is_file():
        raise KernelImageError(f"kernel image {path} does not exist or is not a file")
    with path.open("rb") as file:
        header = file.read(BZIMAGE_VERSION_BASE + 0x10000)
    if is_bzimage(header):
        version = bzimage_version(header)
        if version is None:
            raise KernelImageError(
                f"{path} is a bzImage but its header carries no kernel version string "
                "(boot protocol < 2.00 or a zero kernel_version pointer at 0x20e)"
            )
        return KernelImage(ImageFormat.BZIMAGE, version)
    if header.startswith(ELF_MAGIC):
        try:
            with path.open("rb") as file:
                machine = ELFFile(file).header["e_machine"]
        except ELFError as error:
            raise KernelImageError(f"{path} is not a valid ELF file: {error}") from error
        if machine != "EM_X86_64":
            raise KernelImageError(
                f"{path} is an ELF file for {machine}, but volant boots x86-64 guests; "
                f"expected {EXPECTED}"
            )
        version = _vmlinux_version(path)
        if version is None:
            raise KernelImageError(
                f"{path} is an x86-64 ELF file without a 'Linux version' banner, so it is not a "
                "vmlinux"
            )
        return KernelImage(ImageFormat.VMLINUX, version)
    raise KernelImageError(f"{path} is not a kernel image: expected {EXPECTED}")
