"""Manifests, indexes and descriptors of OCI and Docker v2 (schema 2) images."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FledgeError
from .platform import Platform
from .reference import DIGEST

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

MAX_MANIFEST_BYTES = 4 << 20
REF_NAME = "org.opencontainers.image.ref.name"


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest, size, and for index entries the platform."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: object, *, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise FledgeError(f"{where}: a descriptor is not a JSON object")
        media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            algorithm = digest.split(":", 1)[0] if isinstance(digest, str) else None
            why = (
                f"digest algorithm {algorithm!r} is not supported (only sha256)"
                if algorithm and algorithm != "sha256"
                else f"descriptor digest {digest!r} is not sha256:<64 hex digits>"
            )
            raise FledgeError(f"{where}: {why}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FledgeError(f"{where}: descriptor {digest} has no valid size")
        platform = value.get("platform")
        annotations = value.get("annotations")
        return cls(
            media_type=media_type if isinstance(media_type, str) else "",
            digest=digest,
            size=size,
            platform=Platform.from_json(platform) if isinstance(platform, dict) else None,
            annotations=(
                {k: v for k, v in annotations.items() if isinstance(v, str)}
                if isinstance(annotations, dict)
                else {}
            ),
        )

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            value["annotations"] = dict(self.annotations)
        return value

    @property
    def short(self) -> str:
        """``sha256:`` and the first 12 hex digits, for progress lines."""
        return self.digest[:19]


@dataclass(frozen=True)
class Manifest:
    """A parsed image manifest or index, with the exact bytes its digest covers."""

    digest: str
    media_type: str
    raw: bytes
    document: Mapping[str, Any]
    where: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def manifests(self) -> list[Descriptor]:
        """The entries of an index."""
        entries = self.document.get("manifests")
        if not isinstance(entries, list):
            raise FledgeError(f"{self.where}: the index has no 'manifests' list")
        return [Descriptor.from_json(entry, where=self.where) for entry in entries]

    @property
    def config(self) -> Descriptor:
        return Descriptor.from_json(self.document.get("config"), where=f"{self.where} (config)")

    @property
    def layers(self) -> list[Descriptor]:
        layers = self.document.get("layers")
        if not isinstance(layers, list):
            raise FledgeError(f"{self.where}: the manifest has no 'layers' list")
        return [Descriptor.from_json(layer, where=f"{self.where} (layers)") for layer in layers]


def parse_manifest(raw: bytes, *, media_type: str | None, where: str) -> Manifest:
    """Parse manifest or index bytes; ``media_type`` (a Content-Type or descriptor's) wins
    over the document's own ``mediaType``, which wins over guessing from the fields.

    Raises FledgeError naming ``where`` for schema 1, unknown types and malformed JSON.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise FledgeError(f"{where}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FledgeError(f"{where}: the manifest is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise FledgeError(f"{where}: the manifest is not a JSON object")
    kind = (media_type or "").split(";", 1)[0].strip()
    if kind in ("", "application/json", "application/octet-stream", "text/plain"):
        declared = document.get("mediaType")
        kind = declared if isinstance(declared, str) else ""
    if not kind:
        kind = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if kind in DOCKER_SCHEMA1 or document.get("schemaVersion") == 1:
        raise FledgeError(
            f"{where}: the image uses the retired Docker schema 1 manifest format; "
            "push it again with a current docker, buildah or skopeo (schema 2 or OCI)"
        )
    if kind not in MANIFEST_TYPES:
        raise FledgeError(
            f"{where}: {kind!r} is not an image manifest or index media type "
            "(is this reference an artifact rather than a container image?)"
        )
    return Manifest(
        digest=sha256_digest(raw), media_type=kind, raw=raw, document=document, where=where
    )
