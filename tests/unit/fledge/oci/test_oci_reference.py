"""Registry references are normalised the way docker normalises them."""

from __future__ import annotations

import pytest

from fledge.errors import FledgeError
from fledge.oci.reference import DOCKER_HUB, Reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", Reference(DOCKER_HUB, "library/nginx", "latest")),
        ("nginx:alpine", Reference(DOCKER_HUB, "library/nginx", "alpine")),
        ("docker://nginx:alpine", Reference(DOCKER_HUB, "library/nginx", "alpine")),
        ("docker.io/nginx", Reference(DOCKER_HUB, "library/nginx", "latest")),
        ("index.docker.io/library/nginx:1", Reference(DOCKER_HUB, "library/nginx", "1")),
        ("bitnami/redis:7.2", Reference(DOCKER_HUB, "bitnami/redis", "7.2")),
        ("ghcr.io/owner/app:v1", Reference("ghcr.io", "owner/app", "v1")),
        ("localhost/app", Reference("localhost", "app", "latest")),
        ("localhost:5000/team/app:dev", Reference("localhost:5000", "team/app", "dev")),
        ("127.0.0.1:5000/app", Reference("127.0.0.1:5000", "app", "latest")),
        (f"nginx@{DIGEST}", Reference(DOCKER_HUB, "library/nginx", None, DIGEST)),
        (f"quay.io/a/b:tag@{DIGEST}", Reference("quay.io", "a/b", "tag", DIGEST)),
    ],
)
def test_references_are_normalised(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_a_digest_is_what_gets_pulled_even_with_a_tag() -> None:
    reference = parse_reference(f"registry.example:443/app:v2@{DIGEST}")
    assert reference.identifier == DIGEST
    assert str(reference) == f"registry.example:443/app:v2@{DIGEST}"
    assert parse_reference("app").identifier == "latest"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Nginx", "lower-case"),
        ("nginx@sha512:" + "ab" * 64, "only sha256"),
        ("nginx@sha256:abc", "64 lower-case hex"),
        ("nginx:bad tag", "not a valid tag"),
        ("host:5000/", "missing"),
    ],
)
def test_invalid_references_say_why(text: str, why: str) -> None:
    with pytest.raises(FledgeError, match=why):
        parse_reference(text)
