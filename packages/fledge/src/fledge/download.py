"""Downloads into a content-addressed cache, verified against a sha256 when one is given."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import httpx

from .errors import FledgeError

TIMEOUT_S = 60.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    """Raise a FledgeError naming both digests when ``path`` does not hash to ``expected``."""
    want = expected.removeprefix("sha256:").lower()
    got = sha256_file(path)
    if got != want:
        raise FledgeError(
            f"{what}: checksum mismatch for {path}\n  expected: sha256:{want}\n"
            f"  got:      sha256:{got}\nfix the checksum in fledge.toml or the file it names"
        )


def download(url: str, cache_dir: Path, *, sha256: str | None, what: str) -> Path:
    """Fetch ``url`` into ``<cache>/downloads/sha256/<hex>``; with ``sha256`` a cached copy is
    reused and a mismatch is an error naming both digests."""
    store = cache_dir / "downloads" / "sha256"
    want = sha256.removeprefix("sha256:").lower() if sha256 else None
    if want and (store / want).is_file():
        return store / want
    store.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=store, prefix=".partial-")
    os.close(handle)
    partial = Path(name)
    digest = hashlib.sha256()
    try:
        transport = httpx.HTTPTransport(retries=2)
        with (
            httpx.Client(transport=transport, timeout=TIMEOUT_S, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise FledgeError(
                    f"{what}: downloading {url} failed with HTTP {response.status_code} "
                    f"{response.reason_phrase}"
                )
            with partial.open("wb") as out:
                for block in response.iter_bytes():
                    digest.update(block)
                    out.write(block)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise FledgeError(f"{what}: cannot download {url}: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if want and got != want:
        partial.unlink(missing_ok=True)
        raise FledgeError(
            f"{what}: checksum mismatch for {url}\n  expected: sha256:{want}\n"
            f"  got:      sha256:{got}\nfix the checksum in fledge.toml if the new file is "
            "the one you want"
        )
    final = store / got
    os.replace(partial, final)
    return final
