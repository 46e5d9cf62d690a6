"""The per-VM initrd: boot archives concatenated with a small archive of per-VM files.

Linux unpacks concatenated cpio archives (compressed or not) in order into one rootfs, later
files replacing earlier ones, so a VM's boot media is the plugin's initramfs, the kernel's
modules archive and a tiny archive holding `/etc/volant/vm.json` (DESIGN.md §2). Nothing of
the VM's configuration goes on the kernel command line, which Linux truncates at 2 KiB.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
                with open(archive, "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
                out.write(b"\0" * (-out.tell() % 4))
            if files:
                out.write(cpio_bytes(CpioEntry.file(path, data) for path, data in files.items()))
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def vm_json_files(contract: Mapping[str, Any]) -> dict[str, bytes]:
    """The per-VM files for a guest boot contract document (`vm.json`)."""
    return {VM_JSON_PATH: json.dumps(contract, indent=2, sort_keys=True).encode() + b"\n"}
