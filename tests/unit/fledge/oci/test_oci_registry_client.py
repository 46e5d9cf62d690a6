"""The registry client against canned HTTP answers (httpx.MockTransport, no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fledge.errors import FledgeError
from fledge.oci.blobs import BlobCache
from fledge.oci.manifest import OCI_MANIFEST, sha256_digest
from fledge.oci.reference import parse_reference
from fledge.oci.registry import RegistryClient, RegistryStore

MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}
).encode()


def client(handler: Callable[[httpx.Request], httpx.Response], **extra: object) -> RegistryClient:
    return RegistryClient(
        "registry.example", "team/app", transport=httpx.MockTransport(handler), **extra
    )  # type: ignore[arg-type]


def test_https_is_the_default_and_manifests_are_asked_for_by_type() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    manifest = client(handler).get_manifest("v1", image="registry.example/team/app:v1")
    assert str(seen[0].url) == "https://registry.example/v2/team/app/manifests/v1"
    accept = seen[0].headers["accept"]
    for kind in ("oci.image.manifest", "oci.image.index", "manifest.v2", "manifest.list.v2"):
        assert kind in accept
    assert manifest.digest == sha256_digest(MANIFEST)


def test_a_manifest_that_does_not_match_its_pinned_digest_is_refused() -> None:
    pinned = "sha256:" + "1" * 64
    handler = lambda request: httpx.Response(  # noqa: E731
        200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST}
    )
    with pytest.raises(FledgeError) as caught:
        client(handler).get_manifest(pinned, image="app@pinned")
    assert pinned in str(caught.value) and sha256_digest(MANIFEST) in str(caught.value)


def test_a_lying_docker_content_digest_is_refused() -> None:
    handler = lambda request: httpx.Response(  # noqa: E731
        200,
        content=MANIFEST,
        headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:" + "2" * 64},
    )
    with pytest.raises(FledgeError, match="announced digest"):
        client(handler).get_manifest("v1", image="app:v1")


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]}, "has no manifest v1 in team/app"),
        (404, {"errors": [{"code": "NAME_UNKNOWN"}]}, "has no repository team/app"),
        (401, {}, "needs credentials for team/app"),
        (403, {}, "denied access to team/app"),
        (429, {}, "rate-limiting"),
        (500, {"errors": [{"code": "UNKNOWN"}]}, "HTTP 500"),
    ],
)
def test_registry_errors_become_clear_messages(status: int, body: object, message: str) -> None:
    handler = lambda request: httpx.Response(status, json=body)  # noqa: E731
    with pytest.raises(FledgeError, match=message):
        client(handler, env={"DOCKER_CONFIG": "/nonexistent"}).get_manifest("v1", image="app:v1")


def test_basic_challenges_are_answered_with_the_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Basic dTpw":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    from fledge.oci.auth import Credentials

    assert client(handler, credentials=Credentials("u", "p")).get_manifest("v1", image="a")


def test_bearer_tokens_are_fetched_once_per_scope_and_reused() -> None:
    token_calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token_calls.append(request)
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example/token",'
                    'service="reg",scope="repository:team/app:pull"'
                },
            )
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    registry = client(handler, env={"DOCKER_CONFIG": "/nonexistent"})
    for _ in range(3):
        registry.get_manifest("v1", image="a")
    assert len(token_calls) == 1
    assert token_calls[0].url.params.get_list("scope") == ["repository:team/app:pull"]
    assert "authorization" not in token_calls[0].headers


def test_a_registry_that_ignores_range_is_read_from_the_start(tmp_path: Path) -> None:
    data = b"layer-bytes" * 1000
    digest = sha256_digest(data)
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        return httpx.Response(200, content=data)

    cache = BlobCache(tmp_path)
    cache.root.mkdir(parents=True)
    cache.partial_path(digest).write_bytes(data[:5000])
    store = RegistryStore(parse_reference("registry.example/team/app:v1"), image="a", cache=cache)
    store.client = client(handler)
    from fledge.oci.manifest import Descriptor

    path = store.blob(Descriptor("application/vnd.oci.image.layer.v1.tar", digest, len(data)))
    assert path.read_bytes() == data
    assert ranges == ["bytes=5000-"]


def test_server_errors_on_blobs_are_retried(tmp_path: Path) -> None:
    from fledge.oci.manifest import Descriptor

    data = b"layer" * 100
    answers = [httpx.Response(503), httpx.Response(200, content=data)]
    store = RegistryStore(
        parse_reference("registry.example/team/app:v1"), image="a", cache=BlobCache(tmp_path)
    )
    store.client = client(lambda request: answers.pop(0))
    path = store.blob(Descriptor("x", sha256_digest(data), len(data)))
    assert path.read_bytes() == data and answers == []
