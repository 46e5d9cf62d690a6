"""A VM's NoCloud seed image: its documents as files on a small read-only disk.

cloud-init's NoCloud datasource looks for a filesystem labelled ``cidata`` (``CIDATA`` on
FAT) and reads ``user-data``, ``meta-data`` and, when present, ``network-config`` from its
root. The image is written next to its final name and renamed over it, so a VM never sees a
half-written seed, and rebuilding replaces the previous one. Every date in it is
`SEED_TIME`: the same documents give the same bytes (and the same ``sha256``).

The file is created mode 0600, as user-data may hold secrets.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pluginspec import CloudInit, GuestNetwork
from volantd.cloudinit.documents import SeedDocuments, seed_documents
from volantd.cloudinit.errors import CloudInitError
from volantd.cloudinit.iso import iso_image
from volantd.cloudinit.vfat import vfat_image

SEED_FILENAME = "cloud-init-seed.img"
"""The seed's name in a VM's run directory."""
SEED_DISK = "cloud-init"
"""The seed's disk name (in vm.json and the VMM's drive list)."""
SEED_TIME = datetime(2000, 1, 1, tzinfo=UTC)

SeedFsType = Literal["iso9660", "vfat"]
_FSTYPES: dict[str, SeedFsType] = {"vfat": "vfat", "iso9660": "iso9660", "iso": "iso9660"}


@dataclass(frozen=True)
class SeedImage:
    """A built seed: where it is, its filesystem, and the sha256 of its bytes."""

    path: Path
    fstype: SeedFsType
    sha256: str


def seed_files(documents: SeedDocuments) -> dict[str, bytes]:
    """The seed's files by name, UTF-8 encoded; no ``network-config`` when there is none."""
    files = {"user-data": documents.user_data, "meta-data": documents.meta_data}
    if documents.network_config is not None:
        files["network-config"] = documents.network_config
    return {name: text.encode() for name, text in files.items()}


def build_seed(path: Path, documents: SeedDocuments, mode: str) -> SeedImage:
    """Write the seed of `documents` at `path` as a `mode` (``vfat`` or ``iso9660``) image,
    replacing any previous one atomically."""
    fstype = _FSTYPES.get(mode)
    if fstype is None:
        raise CloudInitError(
            f"cloud_init.seed_mode: {mode!r} is not a seed mode; use vfat or iso9660"
        )
    files = seed_files(documents)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    partial = Path(name)
    try:
        if fstype == "iso9660":
            with os.fdopen(fd, "wb") as file:
                file.write(iso_image(files, SEED_TIME))
        else:
            os.close(fd)
            vfat_image(partial, files, SEED_TIME)
        digest = _sha256(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return SeedImage(path=path, fstype=fstype, sha256=digest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cloud_init_seed(
    run_dir: Path,
    cloud_init: CloudInit | None,
    *,
    vm_id: str,
    hostname: str,
    network: GuestNetwork | None,
) -> SeedImage | None:
    """Build the VM's seed in `run_dir` for this start (its documents may have changed since the
    last), or remove an old one when the VM has no cloud-init any more."""
    path = run_dir / SEED_FILENAME
    if cloud_init is None:
        path.unlink(missing_ok=True)
        return None
    documents = seed_documents(cloud_init, vm_id=vm_id, hostname=hostname, network=network)
    return build_seed(path, documents, cloud_init.seed_mode)
