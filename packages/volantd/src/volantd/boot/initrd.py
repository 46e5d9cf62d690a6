"""The per-VM initrd: boot archives concatenated with a small archive of per-VM files.

Linux unpacks concatenated cpio archives (compressed or not) in order into one rootfs, later
files replacing earlier ones, so a VM's boot media is the plugin's initramfs, the kernel's
modules archive and a tiny archive holding `/etc/volant/vm.json` (DESIGN.md §2). Nothing of
the VM's configuration goes on the kernel command line, which Linux truncates at 2 KiB.

Compressed parts (zstd, gzip) are decompressed here, on the host: plugin images stay small
where they are stored, while the guest kernel, which would otherwise decompress them on its
single boot CPU before running anything, only copies bytes. Under TCG that cut about 0.4 s
from an example plugin's boot (docs/performance.md); on KVM it trades ~20 ms of host CPU for
the same work in the guest.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, cast

import zstandard

from pluginspec import VMContract
from pluginspec.cpio import CpioEntry, cpio_bytes

VM_JSON_PATH = "/etc/volant/vm.json"


def assemble_initrd(
    destination: Path, archives: Sequence[Path], files: Mapping[str, bytes] | None = None
) -> Path:
    """Write `archives` and then an archive of `files` (guest path -> bytes) to `destination`.

    Each part is padded to a 4-byte boundary, where the kernel looks for the next header.
    The file is written beside `destination` and renamed into place.
    """
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for archive in archives:
                with open(archive, "rb") as part, _decompressing(part) as reader:
                    shutil.copyfileobj(reader, out, 1 << 20)
                out.write(b"\0" * (-out.tell() % 4))
            if files:
                out.write(cpio_bytes(CpioEntry.file(path, data) for path, data in files.items()))
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def _decompressing(part: BinaryIO) -> Iterator[BinaryIO]:
    """`part` itself, or a reader of its decompressed bytes when it is zstd or gzip."""
    magic = part.read(4)
    part.seek(0)
    if magic == ZSTD_MAGIC:
        with zstandard.ZstdDecompressor().stream_reader(part, read_across_frames=True) as reader:
            yield cast(BinaryIO, reader)
    elif magic[:2] == GZIP_MAGIC:
        with gzip.GzipFile(fileobj=part) as reader:
            yield cast(BinaryIO, reader)
    else:
        yield part


def vm_json_files(contract: VMContract) -> dict[str, bytes]:
    """The per-VM files for a guest boot contract: just `/etc/volant/vm.json`."""
    return {VM_JSON_PATH: contract.to_json().encode() + b"\n"}
