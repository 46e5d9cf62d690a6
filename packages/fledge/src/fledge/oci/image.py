"""Fetching an OCI image for one platform into the blob cache: what ``fledge build`` calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pluginspec.fledge_config import ImageSource

from ..errors import FledgeError
from .auth import parse_creds
from .blobs import BlobCache, ByteProgress
from .docker_archive import open_docker_archive
from .layout import open_layout
from .manifest import CONFIG_TYPES, IMAGE_MANIFEST_TYPES, MAX_MANIFEST_BYTES, Descriptor
from .platform import DEFAULT_PLATFORM, Platform, parse_platform
from .reference import parse_reference
from .registry import RegistryStore
from .store import ImageStore, find_platform_manifest

if TYPE_CHECKING:
    from ..initramfs import BuildProgress

DOWNLOAD_WORKERS = 4
PROGRESS_EVERY = 1 << 20
MAX_CONFIG_BYTES = 4 * MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class Layer:
    """One layer blob, verified, in the blob cache."""

    digest: str
    """``sha256:<hex>`` of the blob as stored (compressed, if it is)."""
    media_type: str
    """As in the manifest: ``…layer.v1.tar``, ``+gzip``, ``+zstd``, Docker's
    ``rootfs.diff.tar.gzip``, …"""
    size: int
    path: Path
    """The verified blob file in the cache; never write to it."""


@dataclass(frozen=True)
class PulledImage:
    """An image fetched for one platform: its config and its layers, in application order."""

    source: str
    """The image as written in fledge.toml."""
    manifest_digest: str
    """``sha256:<hex>`` of the platform manifest used (not of a multi-arch index)."""
    config_digest: str
    config: dict[str, Any]
    """The whole image config; its ``config`` key has Entrypoint, Cmd, Env, WorkingDir,
    User, ExposedPorts and StopSignal."""
    layers: list[Layer]
    platform: str
    """The platform the image was built for, e.g. ``linux/amd64``."""


@runtime_checkable
class TransferProgress(Protocol):
    """What a BuildProgress may also implement to show downloads byte by byte."""

    def transfer(self, blob: str, done: int, total: int | None) -> None:
        """``blob`` (``sha256:`` and 12 hex digits) has ``done`` of ``total`` bytes; called
        about every MiB and once when complete, from worker threads."""
        ...


@contextmanager
def open_store(
    source: ImageSource,
    *,
    cache: BlobCache,
    creds: str | None = None,
    insecure_http: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Iterator[ImageStore]:
    """The store ``source`` names: a registry, an OCI layout directory or a docker archive."""
    image = str(source)
    store: ImageStore
    if source.transport == "registry":
        store = RegistryStore(
            parse_reference(source.reference),
            image=image,
            cache=cache,
            credentials=parse_creds(creds) if creds else None,
            insecure_http=insecure_http,
            on_note=on_note,
        )
    elif source.transport == "oci-layout":
        path = Path(source.reference).expanduser()
        store = open_layout(path, image=image, cache=cache, tag=source.tag)
    elif source.transport == "docker-archive":
        path = Path(source.reference).expanduser()
        store = open_docker_archive(path, image=image, cache=cache)
    else:
        raise FledgeError(f"image source {image}: unknown transport {source.transport!r}")
    try:
        yield store
    finally:
        store.close()


def resolve_digest(
    source: ImageSource,
    *,
    cache_dir: Path,
    platform: str = DEFAULT_PLATFORM,
    creds: str | None = None,
    insecure_http: bool = False,
) -> str:
    """The digest of the platform manifest ``fetch_image`` would use, without fetching
    layers: one manifest request for a tag, none for a digest already cached. (A classic
    ``docker save`` archive has no manifest, so its layers are hashed to make one.)"""
    wanted = parse_platform(platform)
    with open_store(
        source, cache=BlobCache(cache_dir), creds=creds, insecure_http=insecure_http
    ) as store:
        digest, _, _ = find_platform_manifest(store, wanted, fetch=False)
    return digest


def fetch_image(
    source: ImageSource,
    *,
    cache_dir: Path,
    platform: str = DEFAULT_PLATFORM,
    creds: str | None = None,
    insecure_http: bool = False,
    progress: BuildProgress | None = None,
) -> PulledImage:
    """Fetch the image ``source`` names for ``platform`` into ``<cache_dir>/oci/blobs``.

    Every manifest and blob is checked against its digest (and blobs against their size);
    blobs already in the cache are reused, layers download concurrently, an interrupted
    download resumes. ``creds`` is ``USER:PASS``; without it docker's config.json is used.
    Plain-HTTP registries need ``insecure_http``. ``progress`` gets notes, and byte counts
    when it implements TransferProgress. Raises FledgeError for anything the user can fix.
    """
    wanted = parse_platform(platform)
    on_note = progress.note if progress is not None else None
    image = str(source)
    with open_store(
        source,
        cache=BlobCache(cache_dir),
        creds=creds,
        insecure_http=insecure_http,
        on_note=on_note,
    ) as store:
        digest, manifest, declared = find_platform_manifest(store, wanted)
        assert manifest is not None
        if manifest.media_type not in IMAGE_MANIFEST_TYPES:
            raise FledgeError(f"{manifest.where}: {manifest.media_type} is not an image manifest")
        config_descriptor = manifest.config
        if config_descriptor.media_type not in CONFIG_TYPES:
            raise FledgeError(
                f"{image} is not a container image: its config is "
                f"{config_descriptor.media_type or 'untyped'} (an OCI artifact?)"
            )
        config = _load_config(store.blob(config_descriptor), image=image)
        built_for = Platform.from_json(config)
        if declared is None and built_for is not None and not wanted.accepts(built_for):
            raise FledgeError(
                f"image {image} is built for {built_for}, not {wanted}: use an image (or a "
                f"multi-arch tag) that has {wanted}"
            )
        descriptors = manifest.layers
        _check_diff_ids(config, descriptors, image=image)
        paths = _fetch_all(store, descriptors, progress)
    return PulledImage(
        source=image,
        manifest_digest=digest,
        config_digest=config_descriptor.digest,
        config=config,
        layers=[
            Layer(d.digest, d.media_type, d.size, path)
            for d, path in zip(descriptors, paths, strict=True)
        ],
        platform=str(declared or built_for or wanted),
    )


def _load_config(path: Path, *, image: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise FledgeError(f"image {image}: the image config is over {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FledgeError(f"image {image}: the image config is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise FledgeError(f"image {image}: the image config is not a JSON object")
    return config


def _check_diff_ids(config: dict[str, Any], layers: list[Descriptor], *, image: str) -> None:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if isinstance(diff_ids, list) and len(diff_ids) != len(layers):
        raise FledgeError(
            f"image {image} is inconsistent: its config lists {len(diff_ids)} layers, its "
            f"manifest {len(layers)}"
        )


class _Cancelled(Exception):
    pass


def _fetch_all(
    store: ImageStore, descriptors: list[Descriptor], progress: BuildProgress | None
) -> list[Path]:
    """The layers' cache paths, fetched up to DOWNLOAD_WORKERS at a time; the first failure
    stops the others (their partial downloads stay for the next try)."""
    transfer = progress if isinstance(progress, TransferProgress) else None
    stop = threading.Event()

    def reporter(descriptor: Descriptor) -> ByteProgress:
        last = -PROGRESS_EVERY

        def report(done: int, total: int | None) -> None:
            nonlocal last
            if stop.is_set():
                raise _Cancelled
            if transfer is not None and (done - last >= PROGRESS_EVERY or done == total):
                last = done
                transfer.transfer(descriptor.short, done, total)

        return report

    if len(descriptors) <= 1:
        return [store.blob(d, reporter(d)) for d in descriptors]
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="fledge-pull") as pool:
        futures: list[Future[Path]] = [pool.submit(store.blob, d, reporter(d)) for d in descriptors]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                stop.set()
                for future in futures:
                    future.cancel()
                raise failed.exception()  # type: ignore[misc]
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
        return [future.result() for future in futures]
