"""VFAT seeds: ``mkfs.fat`` (dosfstools) formats a sparse file, ``mcopy`` (mtools) writes the
files with their long names; no mount, no root.

The whole image is the filesystem (no partition table), labelled ``CIDATA``. It is sized from
the documents (at least 1 MiB, FAT12 at that size). ``mkfs.fat --invariant`` fixes the volume
serial and the label's date, and ``mcopy -m`` takes each file's date from its source, which
is set to a fixed time, so the same documents give the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path

from volantd.cloudinit.errors import CloudInitError

VOLUME_LABEL = "CIDATA"
PACKAGES = {"mkfs.fat": "dosfstools", "mcopy": "mtools"}
SYSTEM_DIRS = "/usr/sbin:/sbin"
"""Searched after PATH: mkfs.fat lives in /usr/sbin, which an ordinary user's PATH lacks."""
TOOL_TIMEOUT_S = 60
MIN_IMAGE_BYTES = 1 << 20
_SLACK_BYTES = 256 << 10  # boot sector, FATs, root directory, with room to spare
_FILE_ROUNDING = 16 << 10  # above any cluster size mkfs.fat picks for a few MiB


def vfat_image(path: Path, files: Mapping[str, bytes], when: datetime) -> None:
    """Make `path` (created or truncated) a VFAT filesystem holding `files` dated `when`."""
    mkfs, mcopy = tool("mkfs.fat"), tool("mcopy")
    with open(path, "wb") as image:
        image.truncate(image_size(files))
    _run([mkfs, *_mkfs_options(mkfs), "-n", VOLUME_LABEL, str(path)], "mkfs.fat")
    stamp = when.timestamp()
    with tempfile.TemporaryDirectory(prefix="volant-seed-") as folder:
        sources = []
        for name, data in files.items():
            source = Path(folder, name)
            source.write_bytes(data)
            os.utime(source, (stamp, stamp))
            sources.append(str(source))
        _run([mcopy, "-m", "-i", str(path), *sources, "::/"], "mcopy")


def image_size(files: Mapping[str, bytes]) -> int:
    """Bytes of a VFAT image with room for `files`: whole MiB, at least 1 MiB."""
    data = sum(_round_up(len(content), _FILE_ROUNDING) for content in files.values())
    return max(MIN_IMAGE_BYTES, _round_up(data + _SLACK_BYTES, 1 << 20))


def tool(name: str) -> str:
    """The path of `name` on PATH or in `SYSTEM_DIRS`, or a CloudInitError saying which
    package to install."""
    found = shutil.which(name) or shutil.which(name, path=SYSTEM_DIRS)
    if found is None:
        raise CloudInitError(
            f"{name} is required to build a vfat cloud-init seed but was not found on PATH "
            f"or in {SYSTEM_DIRS}; "
            f"install it with: apt-get install {PACKAGES[name]}, or set cloud_init.seed_mode "
            'to "iso9660" (volantd builds those itself)'
        )
    return found


@cache
def _mkfs_options(mkfs: str) -> tuple[str, ...]:
    """``--invariant`` and ``--mbr=n`` (no fake partition table) where mkfs.fat has them
    (dosfstools 4.2); 4.1 has neither and writes no partition table anyway."""
    help_text = _run([mkfs, "--help"], "mkfs.fat", check=False)
    wanted = {"--invariant": "--invariant", "--mbr": "--mbr=n"}
    return tuple(option for flag, option in wanted.items() if flag in help_text)


def _run(command: list[str], name: str, *, check: bool = True) -> str:
    environment = {key: value for key, value in os.environ.items() if "MTOOLS" not in key}
    # No user or drive configuration, no geometry checks: the image is all mtools sees.
    environment |= {"MTOOLSRC": os.devnull, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}
    try:
        result = subprocess.run(
            command, env=environment, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=TOOL_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CloudInitError(
            f"building the vfat cloud-init seed: {name} failed: {error}"
        ) from error
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise CloudInitError(f"building the vfat cloud-init seed: {name} failed: {output}")
    return result.stdout + result.stderr


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
