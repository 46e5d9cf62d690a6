"""Platforms (``linux/amd64``, ``linux/arm/v7``) and choosing one from a multi-arch index."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import FledgeError

DEFAULT_PLATFORM = "linux/amd64"

_T = TypeVar("_T")

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}
# Variants that mean the same as no variant at all.
_DEFAULT_VARIANT = {"amd64": "v1", "arm64": "v8"}


@dataclass(frozen=True)
class Platform:
    """An OS, CPU architecture and optional variant, normalised the way containerd does."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"

    @classmethod
    def of(cls, os: str, architecture: str, variant: str = "") -> Platform:
        """A normalised platform: ``aarch64`` → ``arm64``, ``arm64/v8`` → ``arm64``."""
        arch, implied = _ARCH_ALIASES.get(architecture.lower(), (architecture.lower(), ""))
        variant = (variant or implied).lower()
        if variant and _DEFAULT_VARIANT.get(arch) == variant:
            variant = ""
        return cls(os.lower(), arch, variant)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Platform | None:
        """The ``platform`` of an index entry, or an image config's os/architecture/variant."""
        os, arch = value.get("os"), value.get("architecture")
        if not isinstance(os, str) or not isinstance(arch, str) or not os or not arch:
            return None
        variant = value.get("variant")
        return cls.of(os, arch, variant if isinstance(variant, str) else "")

    def accepts(self, offered: Platform) -> bool:
        """Whether an image built for ``offered`` runs as this platform; no variant here
        accepts any variant."""
        if (self.os, self.architecture) != (offered.os, offered.architecture):
            return False
        return not self.variant or self.variant == offered.variant


def parse_platform(text: str) -> Platform:
    """``OS/ARCH[/VARIANT]``; raises FledgeError when it is not that shape."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise FledgeError(
            f"platform {text!r} is invalid: write OS/ARCH or OS/ARCH/VARIANT (linux/amd64, "
            "linux/arm64, linux/arm/v7)"
        )
    return Platform.of(*parts)


def choose_platform(
    candidates: Iterable[tuple[Platform | None, _T]], wanted: Platform, *, image: str
) -> tuple[Platform, _T]:
    """The first candidate built for ``wanted``, preferring an exact variant match.

    Raises FledgeError listing the platforms on offer when none fits.
    """
    offered = [(platform, item) for platform, item in candidates if platform is not None]
    fitting = [(p, item) for p, item in offered if wanted.accepts(p)]
    if fitting:
        exact = [(p, item) for p, item in fitting if p.variant == wanted.variant]
        return (exact or fitting)[0]
    names = sorted({str(p) for p, _ in offered if p.os != "unknown"})
    available = ", ".join(names) if names else "none declared"
    raise FledgeError(
        f"image {image} has no variant for platform {wanted}; it offers: {available}. "
        "Build for one of those platforms or use an image built for this one"
    )
