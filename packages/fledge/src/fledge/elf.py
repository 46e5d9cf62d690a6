"""Just enough ELF reading to tell a static executable from a dynamic one."""

from __future__ import annotations

import struct
from pathlib import Path

_PT_INTERP = 3


def elf_interpreter(path: Path) -> str | None:
    """The program interpreter (``PT_INTERP``) of an ELF executable; None when it is static.

    Raises ValueError when ``path`` is not an ELF file.
    """
    data = path.read_bytes()
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise ValueError(f"{path} is not an ELF executable")
    order = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # ELF64: program header fields are 8 bytes wide
        (phoff,) = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
        offset_at, size_at, word = 8, 32, "Q"
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
        offset_at, size_at, word = 4, 16, "I"
    for index in range(phnum):
        start = phoff + index * phentsize
        if start + phentsize > len(data):
            raise ValueError(f"{path}: truncated ELF program headers")
        if struct.unpack_from(order + "I", data, start)[0] != _PT_INTERP:
            continue
        (offset,) = struct.unpack_from(order + word, data, start + offset_at)
        (size,) = struct.unpack_from(order + word, data, start + size_at)
        return data[offset : offset + size].rstrip(b"\0").decode(errors="replace")
    return None
