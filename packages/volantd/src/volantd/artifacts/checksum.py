"""sha256 checksums as manifests write them, and hashing of files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from volantd.artifacts.errors import InvalidChecksumError

HEX_DIGITS = 64
_HEX = re.compile(r"[0-9a-f]+")
_ALGORITHM = re.compile(r"([A-Za-z0-9_-]+):(.*)", re.DOTALL)
_CHUNK = 1 << 20


def parse_checksum(text: str) -> str:
    """The lowercase hex digest of `sha256:<64 hex>` or bare `<64 hex>` (any case).

    Anything else (another algorithm, a wrong length, a placeholder such as `sha256:…`)
    raises InvalidChecksumError naming the value and the accepted forms.
    """
    value = text.strip()
    digits = value
    if match := _ALGORITHM.fullmatch(value):
        algorithm, digits = match.group(1), match.group(2)
        if algorithm.lower() != "sha256":
            raise InvalidChecksumError(text, f"{algorithm} is not supported, only sha256 is")
    digits = digits.lower()
    if not digits:
        raise InvalidChecksumError(text, "it holds no digest")
    if not _HEX.fullmatch(digits):
        raise InvalidChecksumError(text, "it holds characters that are not hex digits")
    if len(digits) != HEX_DIGITS:
        raise InvalidChecksumError(
            text, f"it has {len(digits)} hex digits, a sha256 digest has {HEX_DIGITS}"
        )
    return digits


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
