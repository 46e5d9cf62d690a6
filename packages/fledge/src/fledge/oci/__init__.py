"""Pulling OCI images: registries, OCI layouts and ``docker save`` archives, into a verified
blob cache. ``fetch_image`` is the entry point; unpacking the layers lives elsewhere."""

from .blobs import BlobCache
from .image import Layer, PulledImage, TransferProgress, fetch_image, resolve_digest
from .platform import DEFAULT_PLATFORM, Platform, parse_platform
from .reference import Reference, parse_reference

__all__ = [
    "DEFAULT_PLATFORM",
    "BlobCache",
    "Layer",
    "Platform",
    "PulledImage",
    "Reference",
    "TransferProgress",
    "fetch_image",
    "parse_platform",
    "parse_reference",
    "resolve_digest",
]
