"""``docker save`` archives: the classic ``manifest.json`` form, and the OCI layout that
Docker 25 and later put inside the tar (read with the layout code)."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import zstandard

from ..errors import FledgeError
from .blobs import CHUNK, BlobCache, ByteProgress
from .layout import LayoutStore
from .manifest import (
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    parse_manifest,
    sha256_digest,
)
from .reference import DIGEST

KIND = "docker archive"


def _clean(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name


class TarFiles:
    """The members of a tar file (plain or compressed), read in place; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (open until close())
            members = self._tar.getmembers()
        except (OSError, tarfile.TarError) as exc:
            raise FledgeError(
                f"{KIND} {path} cannot be read as a tar file ({exc}); write it with "
                "docker save -o FILE IMAGE"
            ) from None
        self._members = {_clean(m.name): m for m in members}
        self._lock = threading.RLock()

    def close(self) -> None:
        self._tar.close()

    def exists(self, name: str) -> bool:
        return _clean(name) in self._members

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self._members.get(_clean(name))
        if member is None:
            raise FileNotFoundError(name)
        return member

    def read(self, name: str, *, limit: int) -> bytes:
        with self.open(name) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise FledgeError(f"{self.where}: {name} is larger than {limit} bytes")
        return data

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        member = self._member(name)
        with self._lock:
            handle = self._tar.extractfile(member)
            if handle is None:
                raise FileNotFoundError(name)
            try:
                yield handle
            finally:
                handle.close()


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return OCI_LAYER_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return OCI_LAYER_ZSTD
    return OCI_LAYER


def _uncompressed_digest(path: Path, media_type: str) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as raw:
        stream: Any = (
            gzip.GzipFile(fileobj=raw)
            if media_type == OCI_LAYER_GZIP
            else zstandard.ZstdDecompressor().stream_reader(raw)
        )
        with stream:
            for block in iter(lambda: stream.read(CHUNK), b""):
                hasher.update(block)
    return "sha256:" + hasher.hexdigest()


class LegacyArchiveStore:
    """A ``docker save`` archive described by ``manifest.json``; the manifest fledge reports
    is an OCI manifest synthesised from its config and layers (so its digest is stable)."""

    def __init__(self, files: TarFiles, *, image: str, cache: BlobCache) -> None:
        self.files = files
        self.image = image
        self.cache = cache
        self._manifest: Manifest | None = None

    def close(self) -> None:
        self.files.close()

    def _fail(self, why: str) -> FledgeError:
        return FledgeError(f"{KIND} {self.files.where}: {why}")

    def _entry(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.files.read("manifest.json", limit=MAX_MANIFEST_BYTES))
        except FileNotFoundError:
            raise self._fail(
                "has neither manifest.json nor an OCI layout; is it really the output of "
                "docker save?"
            ) from None
        except ValueError as exc:
            raise self._fail(f"manifest.json is not valid JSON ({exc})") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self._fail("manifest.json is not a list of images")
        if len(entries) != 1:
            tags = [", ".join(e.get("RepoTags") or ["<untagged>"]) for e in entries]
            raise self._fail(
                f"holds {len(entries)} images ({'; '.join(tags) or 'none'}); save just the "
                "one to build (docker save -o FILE IMAGE)"
            )
        entry: dict[str, Any] = entries[0]
        return entry

    def _read_config(self, name: str) -> tuple[bytes, dict[str, Any]]:
        try:
            raw = self.files.read(name, limit=MAX_MANIFEST_BYTES * 4)
        except FileNotFoundError:
            raise self._fail(f"manifest.json names config {name}, which is missing") from None
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise self._fail(f"config {name} is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise self._fail(f"config {name} is not a JSON object")
        return raw, config

    def _ingest_layer(self, name: str, diff_id: object) -> Descriptor:
        try:
            with self.files.open(name) as handle:
                media_type = _sniff(handle.read(4))
        except FileNotFoundError:
            raise self._fail(f"manifest.json names layer {name}, which is missing") from None
        expected = diff_id if isinstance(diff_id, str) and DIGEST.fullmatch(diff_id) else None
        what = f"{KIND} {self.files.where} ({name})"
        with self.files.open(name) as handle:
            if media_type == OCI_LAYER and expected:
                digest, path = self.cache.ingest(handle, what=what, digest=expected)
            else:
                digest, path = self.cache.ingest(handle, what=what)
        if media_type != OCI_LAYER and expected:
            got = _uncompressed_digest(path, media_type)
            if got != expected:
                raise self._fail(
                    f"layer {name} failed verification against the config's diff_id\n"
                    f"  expected: {expected}\n  got:      {got}\nsave the image again"
                )
        return Descriptor(media_type, digest, path.stat().st_size)

    def root(self) -> Manifest:
        if self._manifest is not None:
            return self._manifest
        entry = self._entry()
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise self._fail("manifest.json lacks Config or Layers")
        config_raw, config = self._read_config(config_name)
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
            raise self._fail(
                f"config {config_name} lists {len(diff_ids or [])} layer diff_ids but "
                f"manifest.json lists {len(layer_names)} layers"
            )
        config_digest = sha256_digest(config_raw)
        self.cache.put_bytes(config_raw, what=f"{KIND} {self.files.where}")
        layers = [
            self._ingest_layer(str(name), diff_id)
            for name, diff_id in zip(layer_names, diff_ids, strict=True)
        ]
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": Descriptor(OCI_CONFIG, config_digest, len(config_raw)).to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        raw = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        self.cache.put_bytes(raw, what=f"{KIND} {self.files.where}")
        self._manifest = parse_manifest(
            raw, media_type=OCI_MANIFEST, where=f"{KIND} {self.files.where}"
        )
        return self._manifest

    def manifest(self, descriptor: Descriptor) -> Manifest:
        raise self._fail(f"has no manifest {descriptor.digest}")

    def blob(self, descriptor: Descriptor, progress: ByteProgress | None = None) -> Path:
        found = self.cache.get(descriptor.digest, descriptor.size)
        if found is None:
            raise self._fail(f"blob {descriptor.digest} vanished from the cache; build again")
        return found


class ArchiveLayoutStore(LayoutStore):
    """The OCI layout inside a Docker 25+ ``docker save`` archive."""

    def __init__(self, files: TarFiles, *, image: str, cache: BlobCache) -> None:
        super().__init__(files, image=image, cache=cache, tag=None, kind=KIND)
        self.tar = files

    def close(self) -> None:
        self.tar.close()


def open_docker_archive(
    path: Path, *, image: str, cache: BlobCache
) -> LegacyArchiveStore | ArchiveLayoutStore:
    """The image in a ``docker save`` archive; raises FledgeError when it is not one."""
    if not path.is_file():
        raise FledgeError(
            f"{KIND} {path} does not exist or is not a file (source.image {image}); "
            "write it with docker save -o FILE IMAGE or fix the path"
        )
    files = TarFiles(path)
    if files.exists("oci-layout") and files.exists("index.json"):
        return ArchiveLayoutStore(files, image=image, cache=cache)
    return LegacyArchiveStore(files, image=image, cache=cache)
