"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/sha256/…``), in a directory or
inside a ``docker save`` archive; blobs are verified and copied into the blob cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Protocol

from ..errors import FledgeError
from .blobs import BlobCache, ByteProgress
from .manifest import (
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    REF_NAME,
    Descriptor,
    Manifest,
    parse_manifest,
    sha256_digest,
)


class LayoutFiles(Protocol):
    """Read access to the files of a layout, wherever they are stored."""

    where: str
    """The directory or archive, for messages."""

    def exists(self, name: str) -> bool: ...

    def read(self, name: str, *, limit: int) -> bytes:
        """The whole file; FileNotFoundError when missing, FledgeError when over limit."""
        ...

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]:
        """The file as a stream; FileNotFoundError when missing."""
        ...


class DirectoryFiles:
    """A layout directory on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read(self, name: str, *, limit: int) -> bytes:
        path = self.root / name
        if path.stat().st_size > limit:
            raise FledgeError(f"{path} is larger than {limit} bytes")
        return path.read_bytes()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        with (self.root / name).open("rb") as handle:
            yield handle


def blob_name(digest: str) -> str:
    """The path of a blob inside a layout (the digest was validated by Descriptor)."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"blobs/{algorithm}/{hex_digest}"


def _ref_name(entry: Descriptor) -> str | None:
    return entry.annotations.get(REF_NAME)


class LayoutStore:
    """An image in an OCI layout, picked by tag (the ``org.opencontainers.image.ref.name``
    annotation) or, without a tag, the layout's only image."""

    def __init__(
        self,
        files: LayoutFiles,
        *,
        image: str,
        cache: BlobCache,
        tag: str | None = None,
        kind: str = "OCI layout",
    ) -> None:
        self.files = files
        self.image = image
        self.cache = cache
        self.tag = tag
        self.kind = kind

    def close(self) -> None:
        pass

    def _read_json_file(self, name: str) -> bytes:
        try:
            return self.files.read(name, limit=MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            raise FledgeError(
                f"{self.kind} {self.files.where} has no {name}; is it really an OCI image "
                "layout (skopeo copy … oci:DIR, or docker buildx --output type=oci)?"
            ) from None

    def root(self) -> Manifest:
        marker = self._read_json_file("oci-layout")
        try:
            version = json.loads(marker).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, str):
            raise FledgeError(
                f"{self.kind} {self.files.where}: oci-layout has no imageLayoutVersion"
            )
        where = f"{self.files.where}/index.json"
        index = parse_manifest(
            self._read_json_file("index.json"), media_type=OCI_INDEX, where=where
        )
        if not index.is_index:
            raise FledgeError(f"{where} is not an image index")
        entries = list(zip(index.manifests, index.document["manifests"], strict=True))
        names = sorted({name for entry, _ in entries if (name := _ref_name(entry))})
        if self.tag is not None:
            entries = [(e, raw) for e, raw in entries if _ref_name(e) == self.tag]
            if not entries:
                tags = ", ".join(names) if names else "none"
                raise FledgeError(
                    f"{self.kind} {self.files.where} has no image tagged {self.tag!r} "
                    f"(tags: {tags})"
                )
        elif len(names) > 1:
            raise FledgeError(
                f"{self.kind} {self.files.where} holds several images ({', '.join(names)}): "
                "name one as oci-layout:PATH:TAG"
            )
        if not entries:
            raise FledgeError(f"{where} lists no images")
        if len(entries) == 1:
            return self.manifest(entries[0][0])
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [r for _, r in entries],
        }
        raw = json.dumps(document, separators=(",", ":")).encode()
        return parse_manifest(raw, media_type=OCI_INDEX, where=where)

    def manifest(self, descriptor: Descriptor) -> Manifest:
        name = blob_name(descriptor.digest)
        where = f"{self.files.where}/{name}"
        try:
            raw = self.files.read(name, limit=MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            raise self._missing(descriptor) from None
        got = sha256_digest(raw)
        if got != descriptor.digest or len(raw) != descriptor.size:
            raise FledgeError(
                f"{self.kind} {self.files.where}: {name} failed verification\n"
                f"  expected: {descriptor.digest} ({descriptor.size} bytes)\n"
                f"  got:      {got} ({len(raw)} bytes)\nthe layout is damaged; export it again"
            )
        return parse_manifest(raw, media_type=descriptor.media_type, where=where)

    def blob(self, descriptor: Descriptor, progress: ByteProgress | None = None) -> Path:
        found = self.cache.get(descriptor.digest, descriptor.size)
        if found is not None:
            return found
        try:
            with self.files.open(blob_name(descriptor.digest)) as source:
                _, path = self.cache.ingest(
                    source,
                    what=f"{self.kind} {self.files.where}",
                    digest=descriptor.digest,
                    size=descriptor.size,
                    progress=progress,
                )
        except FileNotFoundError:
            raise self._missing(descriptor) from None
        return path

    def _missing(self, descriptor: Descriptor) -> FledgeError:
        return FledgeError(
            f"{self.kind} {self.files.where} lacks blob {descriptor.digest} "
            f"({blob_name(descriptor.digest)}); the layout is incomplete, export it again"
        )


def open_layout(path: Path, *, image: str, cache: BlobCache, tag: str | None) -> LayoutStore:
    """The OCI layout directory at ``path``; raises FledgeError when it is not one."""
    if not path.is_dir():
        raise FledgeError(
            f"OCI layout {path} does not exist or is not a directory (source.image "
            f"{image}); write it with skopeo copy … oci:{path} or fix the path"
        )
    return LayoutStore(DirectoryFiles(path), image=image, cache=cache, tag=tag)
