"""Where cloud-init documents come from: volantd reads no host file on an API request.

A manifest installed from its file may name documents by path: they are read then, from
inside the manifest's folder, and stored inline (a URL-installed manifest's relative paths
are fetched from beside it). A VM config sent to the API must carry the documents' content
(`volar vms create --cloud-init-user-data FILE` reads the file on the client).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urljoin

from pluginspec import CloudInit, PluginManifest, SpecError
from volantd.cloudinit.documents import MAX_DOCUMENT_BYTES, read_document
from volantd.cloudinit.errors import CloudInitError

DOCUMENTS = ("user_data", "meta_data", "network_config")


def refuse_host_files(cloud_init: CloudInit | None, field: str = "cloud_init") -> None:
    """A SpecError for any document given by path (a request, where volantd reads no files)."""
    for name in DOCUMENTS:
        document = getattr(cloud_init, name, None) if cloud_init else None
        if document is not None and document.path is not None:
            raise SpecError.single(
                f"{document.path!r}: volantd reads no host files for an API request; send the "
                "document's content instead (volar vms create --cloud-init-user-data FILE and "
                "its siblings read the file for you)",
                f"{field}.{name}.path",
            )


async def inline_documents(manifest: PluginManifest, origin: str | None) -> PluginManifest:
    """`manifest` with its cloud-init documents' paths replaced by their content, read at
    install from `origin` (the manifest file's folder, or its URL; None: a request body)."""
    cloud_init = manifest.cloud_init
    if cloud_init is None or all(
        getattr(cloud_init, name) is None or getattr(cloud_init, name).path is None
        for name in DOCUMENTS
    ):
        return manifest
    if origin is None:
        refuse_host_files(cloud_init)
    assert origin is not None
    update = {}
    for name in DOCUMENTS:
        document = getattr(cloud_init, name)
        if document is None or document.path is None:
            continue
        field = f"cloud_init.{name}.path"
        if "://" in origin:
            from volantd.registry import fetch_document  # the registry imports this module

            fetched = await fetch_document(
                urljoin(origin, document.path), f"{field} of the manifest",
                max_bytes=MAX_DOCUMENT_BYTES,
            )  # fmt: skip
            text = fetched.decode(errors="replace")
        else:
            text = _read_inside(document.path, origin, field, manifest.name)
        update[name] = document.model_copy(update={"content": text, "path": None, "inline": True})
    return manifest.model_copy(update={"cloud_init": cloud_init.model_copy(update=update)})


def _read_inside(path: str, folder: str, field: str, plugin: str) -> str:
    real = Path(os.path.realpath(os.path.join(folder, path)))
    home = os.path.realpath(folder)
    if os.path.commonpath([home, real]) != home:
        raise SpecError.single(
            f"{path!r} is outside the plugin's folder {folder}; put the document next to the "
            "manifest or give its content inline",
            field,
            source=plugin,
        )
    try:
        return read_document(real, field)
    except CloudInitError as error:
        message = str(error).removeprefix(f"{field}: ")
        raise SpecError.single(message, field, source=plugin) from None
