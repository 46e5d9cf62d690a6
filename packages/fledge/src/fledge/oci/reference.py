"""Registry references (``nginx:alpine``, ``host:5000/team/app@sha256:…``) in canonical form."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import FledgeError

DOCKER_HUB = "registry-1.docker.io"
"""The host Docker Hub's v2 API answers on; ``docker.io`` and its aliases map to it."""
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """An image in a registry: host (with port), repository path, and a tag and/or digest.

    When both are given the digest is what is pulled; the tag is kept for messages.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _is_domain(component: str) -> bool:
    # Docker's rule: the first path component is a host when it looks like one.
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component != component.lower()
    )


def parse_reference(text: str) -> Reference:
    """Parse ``[docker://][HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`` the way docker does.

    No host means Docker Hub, whose single-component names live under ``library/``; no tag
    and no digest means ``latest``. Raises FledgeError naming the reference when invalid.
    """
    value = text.strip().removeprefix("docker://")

    def invalid(why: str) -> FledgeError:
        return FledgeError(f"image reference {text!r} is invalid: {why}")

    name, at, digest = value.partition("@")
    if at:
        if digest.split(":", 1)[0] != "sha256":
            raise invalid("only sha256 digests are supported (NAME@sha256:<64 hex digits>)")
        if not DIGEST.fullmatch(digest):
            raise invalid("a digest is sha256: followed by 64 lower-case hex digits")
    slash = name.find("/")
    registry = ""
    if slash > 0 and _is_domain(name[:slash]):
        registry, name = name[:slash], name[slash + 1 :]
        if not _DOMAIN.fullmatch(registry):
            raise invalid(f"{registry!r} is not a valid registry host")
    path, colon, tag = name.rpartition(":") if ":" in name else (name, "", "")
    if colon and not _TAG.fullmatch(tag):
        raise invalid(f"{tag!r} is not a valid tag")
    if not path:
        raise invalid("the repository name is missing")
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            lower = " (repository names are lower-case)" if component != component.lower() else ""
            raise invalid(f"{component!r} is not a valid repository path component{lower}")
    if not registry or registry.lower() in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return Reference(
        registry=registry,
        repository=path,
        tag=tag or (None if digest else DEFAULT_TAG),
        digest=digest or None,
    )
