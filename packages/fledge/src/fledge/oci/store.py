"""What every image source offers (a registry, an OCI layout, a ``docker save`` archive), and
the walk from the image it names to the manifest for one platform."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..errors import FledgeError
from .blobs import ByteProgress
from .manifest import INDEX_TYPES, Descriptor, Manifest
from .platform import Platform, choose_platform

MAX_NESTING = 4


class ImageStore(Protocol):
    """One image source. Everything it returns has been checked against its digest."""

    image: str
    """The image as the user wrote it, for messages."""

    def root(self) -> Manifest:
        """The manifest or index the source names (a tag, a digest, the only image)."""
        ...

    def manifest(self, descriptor: Descriptor) -> Manifest:
        """A manifest or index by descriptor."""
        ...

    def blob(self, descriptor: Descriptor, progress: ByteProgress | None = None) -> Path:
        """The blob's verified file in the blob cache, fetched or copied there if needed."""
        ...

    def close(self) -> None: ...


def _entries(
    store: ImageStore, index: Manifest, depth: int
) -> list[tuple[Platform | None, Descriptor]]:
    """An index's entries; a nested index that declares no platform is opened in place."""
    found: list[tuple[Platform | None, Descriptor]] = []
    for entry in index.manifests:
        if entry.media_type in INDEX_TYPES and entry.platform is None:
            if depth >= MAX_NESTING:
                raise FledgeError(f"{store.image}: indexes are nested too deeply ({index.where})")
            found += _entries(store, store.manifest(entry), depth + 1)
        else:
            found.append((entry.platform, entry))
    return found


def find_platform_manifest(
    store: ImageStore, wanted: Platform, *, fetch: bool = True
) -> tuple[str, Manifest | None, Platform | None]:
    """Follow indexes from the store's root to the image manifest for ``wanted``.

    Returns the manifest's digest, the manifest (None when ``fetch`` is false and an index
    entry already named its digest), and the platform the index declared for it (None when
    no index was involved). Raises FledgeError listing the platforms on offer if none fits.
    """
    current = store.root()
    declared: Platform | None = None
    for depth in range(MAX_NESTING + 1):
        if not current.is_index:
            return current.digest, current, declared
        entries = _entries(store, current, depth)
        if len(entries) == 1 and entries[0][0] is None:
            declared, entry = entries[0]
        else:
            declared, entry = choose_platform(entries, wanted, image=store.image)
        if not fetch and entry.media_type not in INDEX_TYPES and entry.media_type:
            return entry.digest, None, declared
        current = store.manifest(entry)
    raise FledgeError(f"{store.image}: indexes are nested too deeply ({current.where})")
