"""The documents of a VM's NoCloud seed: ``user-data``, ``meta-data`` and ``network-config``.

A document is the ``content`` given in the manifest or VM config; a manifest's ``path``
documents were read when its plugin was installed (``volantd.cloudinit.sources``), so none
is read when a VM starts. Texts are kept byte for byte,
trailing newlines included. What the user leaves out volantd fills in:

* user-data: ``#cloud-config`` and nothing else;
* meta-data: ``instance-id: volant-<vm id>`` and ``local-hostname: <VM name>``; a user's
  meta-data lacking either key gets it added, so cloud-init always knows the instance;
* network-config: the VM's NIC (``volantd.cloudinit.network``); none when it has no NIC.

A blank document counts as not given (pluginspec already drops blank ones).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pluginspec import CloudInit, CloudInitDocument, GuestNetwork
from volantd.cloudinit.errors import CloudInitError
from volantd.cloudinit.network import network_config
from volantd.cloudinit.yamltext import scalar

MAX_DOCUMENT_BYTES = 1 << 20
DEFAULT_USER_DATA = "#cloud-config\n"
DATASOURCE = "NoCloud"
_GIVE_INSTEAD = "give the document's content instead, or a file next to the manifest"


@dataclass(frozen=True)
class SeedDocuments:
    """The texts of the seed's files; ``network_config`` None: no ``network-config`` file."""

    user_data: str
    meta_data: str
    network_config: str | None


def instance_id(vm_id: str) -> str:
    """cloud-init's instance id of a VM: a recreated VM (new id) is a new instance."""
    return f"volant-{vm_id}"


def seed_documents(
    cloud_init: CloudInit, *, vm_id: str, hostname: str, network: GuestNetwork | None
) -> SeedDocuments:
    """The seed's documents for one VM: the user's, completed as the module describes.

    A document still given by ``path`` raises CloudInitError naming the field: volantd reads
    no host file when a VM starts.
    """
    if cloud_init.datasource.casefold() != DATASOURCE.casefold():
        raise CloudInitError(
            f"cloud_init.datasource: volantd builds {DATASOURCE} seeds only (got "
            f"{cloud_init.datasource!r}); set it to {DATASOURCE} or leave it out"
        )
    user_data = document_text(cloud_init.user_data, "user_data")
    meta_data = document_text(cloud_init.meta_data, "meta_data")
    identity = {"instance-id": instance_id(vm_id), "local-hostname": hostname}
    network_text = document_text(cloud_init.network_config, "network_config")
    return SeedDocuments(
        user_data=user_data if user_data and user_data.strip() else DEFAULT_USER_DATA,
        meta_data=complete_meta_data(meta_data, identity),
        network_config=(
            network_text if network_text and network_text.strip() else network_config(network)
        ),
    )


def document_text(document: CloudInitDocument | None, field: str) -> str | None:
    """A document's content (at most 1 MiB)."""
    if document is None:
        return None
    if document.content is not None:
        if len(document.content.encode()) > MAX_DOCUMENT_BYTES:
            raise CloudInitError(
                f"cloud_init.{field}.content is larger than 1 MiB; cloud-init documents must "
                "be at most 1 MiB"
            )
        return document.content
    raise CloudInitError(
        f"cloud_init.{field}.path: {document.path}: volantd reads cloud-init files when a "
        "plugin is installed from its manifest file, never when a VM starts; install the "
        "plugin again, or give the document's content"
    )


def read_document(path: Path, field: str) -> str:
    """The text of the regular file `path` (absolute, at most 1 MiB, UTF-8)."""
    if not path.is_absolute():
        raise CloudInitError(
            f"{field}: {path} is not an absolute path; paths in a manifest are resolved "
            "against its folder when it is loaded from a file, so give an absolute path or "
            "the document's content"
        )
    try:
        # O_NONBLOCK: a FIFO must not hang the start; it is refused below like any non-file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CloudInitError(f"{field}: {path} is not a regular file; {_GIVE_INSTEAD}")
            data = _read_at_most(fd, MAX_DOCUMENT_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as error:
        raise CloudInitError(
            f"{field}: cannot read {path} ({error.strerror}); {_GIVE_INSTEAD}"
        ) from error
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CloudInitError(
            f"{field}: {path} is larger than 1 MiB; cloud-init documents must be at most 1 MiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CloudInitError(
            f"{field}: {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from error


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def complete_meta_data(text: str | None, identity: Mapping[str, str]) -> str:
    """`text` with every key of `identity` it lacks at its top level added; all of
    `identity` when `text` is None or blank.

    Without a YAML parser, top-level keys are found by line: a key at the start of a line,
    bare or quoted, then a colon. A JSON object (which upstream fledge wrote for meta-data
    given as a table) is completed as JSON.
    """
    if text is None or not text.strip():
        return "".join(f"{key}: {scalar(value)}\n" for key, value in identity.items())
    if text.lstrip().startswith("{"):
        return _complete_json(text, identity)
    missing = {key: value for key, value in identity.items() if not _has_top_level_key(text, key)}
    if not missing:
        return text
    separator = "" if text.endswith("\n") else "\n"
    return text + separator + "".join(f"{key}: {scalar(value)}\n" for key, value in missing.items())


def _has_top_level_key(text: str, key: str) -> bool:
    pattern = re.compile(rf"""^(["']?){re.escape(key)}\1[ \t]*:(?:\s|$)""", re.MULTILINE)
    return pattern.search(text) is not None


def _complete_json(text: str, identity: Mapping[str, str]) -> str:
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise CloudInitError(
            "cloud_init.meta_data: a flow mapping ({...}) must be a JSON object for volantd "
            "to add instance-id and local-hostname; write it as JSON or as a YAML block mapping"
        )
    missing = {key: value for key, value in identity.items() if key not in document}
    if not missing:
        return text
    return json.dumps({**document, **missing}, indent=2) + "\n"
