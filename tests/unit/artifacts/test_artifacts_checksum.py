"""parse_checksum and sha256_file: the digest forms a manifest may write, and hashing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from volantd.artifacts import ArtifactError, InvalidChecksumError, parse_checksum, sha256_file

DIGEST = hashlib.sha256(b"volant").hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{DIGEST}",
        DIGEST,
        f"sha256:{DIGEST.upper()}",
        f"SHA256:{DIGEST}",
        DIGEST.upper(),
        f"  sha256:{DIGEST}\n",
    ],
)
def test_accepts_prefixed_or_bare_hex_in_any_case(text: str) -> None:
    assert parse_checksum(text) == DIGEST


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sha256:…", "not hex digits"),
        ("sha256:", "no digest"),
        ("", "no digest"),
        (f"md5:{DIGEST[:32]}", "md5 is not supported, only sha256 is"),
        (f"sha512:{DIGEST}{DIGEST}", "sha512 is not supported"),
        (f"sha256:{DIGEST[:-1]}", "63 hex digits, a sha256 digest has 64"),
        (DIGEST + "0", "65 hex digits"),
        (f"sha256:{DIGEST[:-1]}g", "not hex digits"),
        (f"sha256: {DIGEST}", "not hex digits"),
    ],
)
def test_rejects_anything_else_naming_the_value_and_the_accepted_forms(
    text: str, reason: str
) -> None:
    with pytest.raises(InvalidChecksumError) as caught:
        parse_checksum(text)
    message = str(caught.value)
    assert repr(text) in message
    assert reason in message
    assert "'sha256:' followed by 64 hex digits" in message
    assert caught.value.value == text
    assert isinstance(caught.value, ArtifactError)


def test_sha256_file_hashes_the_content(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # larger than one read chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()
