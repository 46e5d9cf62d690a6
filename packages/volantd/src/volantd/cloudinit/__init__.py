"""A VM's cloud-init NoCloud seed: its documents (`seed_documents`) and the small disk
image that carries them to the guest (`build_seed`)."""

from volantd.cloudinit.documents import (
    DEFAULT_USER_DATA,
    MAX_DOCUMENT_BYTES,
    SeedDocuments,
    instance_id,
    seed_documents,
)
from volantd.cloudinit.errors import CloudInitError
from volantd.cloudinit.network import network_config
from volantd.cloudinit.seed import (
    SEED_DISK,
    SEED_FILENAME,
    SeedImage,
    build_seed,
    cloud_init_seed,
    seed_files,
)

__all__ = [
    "DEFAULT_USER_DATA",
    "MAX_DOCUMENT_BYTES",
    "SEED_DISK",
    "SEED_FILENAME",
    "CloudInitError",
    "SeedDocuments",
    "SeedImage",
    "build_seed",
    "cloud_init_seed",
    "instance_id",
    "network_config",
    "seed_documents",
    "seed_files",
]
