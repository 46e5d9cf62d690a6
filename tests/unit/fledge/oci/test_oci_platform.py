"""Platform strings, normalisation, and picking a manifest from a multi-arch index."""

from __future__ import annotations

import pytest

from fledge.errors import FledgeError
from fledge.oci.manifest import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, parse_manifest
from fledge.oci.platform import Platform, choose_platform, parse_platform


def test_platforms_are_normalised() -> None:
    assert parse_platform("linux/amd64") == Platform("linux", "amd64")
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform("linux/aarch64") == Platform("linux", "arm64")
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64")
    assert parse_platform("linux/armhf") == Platform("linux", "arm", "v7")
    assert str(parse_platform("Linux/ARM/v6")) == "linux/arm/v6"


@pytest.mark.parametrize("text", ["amd64", "linux/", "linux/arm/v7/x", ""])
def test_malformed_platforms_are_refused(text: str) -> None:
    with pytest.raises(FledgeError, match="OS/ARCH"):
        parse_platform(text)


OFFERED = [
    (Platform.of("linux", "arm", "v6"), "armv6"),
    (Platform.of("linux", "arm", "v7"), "armv7"),
    (Platform.of("linux", "arm64", "v8"), "arm64"),
    (Platform.of("linux", "amd64"), "amd64"),
    (Platform.of("unknown", "unknown"), "attestation"),
    (None, "no platform"),
]


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("linux/amd64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
        ("linux/arm/v7", "armv7"),
        ("linux/arm", "armv6"),
    ],
)
def test_the_matching_platform_is_chosen(wanted: str, chosen: str) -> None:
    assert choose_platform(OFFERED, parse_platform(wanted), image="img")[1] == chosen


def test_an_exact_variant_beats_the_first_match() -> None:
    offered = [(Platform.of("linux", "amd64", "v3"), "v3"), (Platform.of("linux", "amd64"), "v1")]
    assert choose_platform(offered, parse_platform("linux/amd64"), image="img")[1] == "v1"
    assert choose_platform(offered, parse_platform("linux/amd64/v3"), image="img")[1] == "v3"


def test_no_match_lists_the_real_platforms_on_offer() -> None:
    with pytest.raises(FledgeError) as caught:
        choose_platform(OFFERED, parse_platform("linux/riscv64"), image="example/app:1")
    message = str(caught.value)
    assert "example/app:1" in message and "linux/riscv64" in message
    assert "linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64" in message
    assert "unknown" not in message


def test_manifest_media_types_come_from_header_then_document_then_shape() -> None:
    index = b'{"schemaVersion": 2, "manifests": []}'
    assert parse_manifest(index, media_type=None, where="x").media_type == OCI_INDEX
    listed = b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % DOCKER_LIST.encode()
    assert parse_manifest(listed, media_type="application/json", where="x").is_index
    plain = b'{"schemaVersion": 2, "config": {}, "layers": []}'
    manifest = parse_manifest(plain, media_type=f"{OCI_MANIFEST}; charset=utf-8", where="x")
    assert manifest.media_type == OCI_MANIFEST and not manifest.is_index
    assert manifest.digest.startswith("sha256:")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"schemaVersion": 1, "fsLayers": []}', "schema 1"),
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType": "application/vnd.cncf.helm.chart"}', "not an image manifest"),
    ],
)
def test_unusable_manifests_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(FledgeError, match=why):
        parse_manifest(raw, media_type=None, where="registry.example/app:1")
