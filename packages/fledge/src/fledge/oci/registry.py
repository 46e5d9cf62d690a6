"""Pulling from an OCI / Docker v2 registry over HTTPS (plain HTTP only when asked)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import httpx

from .. import __version__
from ..errors import FledgeError
from .auth import Credentials, RegistryAuth, credential_source
from .blobs import BlobCache, BlobStream, ByteProgress, TransferInterrupted
from .manifest import MANIFEST_TYPES, MAX_MANIFEST_BYTES, Descriptor, Manifest, parse_manifest
from .reference import Reference

TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 15.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in str(seen) or "CERTIFICATE" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _error_codes(response: httpx.Response) -> list[str]:
    try:
        errors = response.json().get("errors")
        return [str(e.get("code", "")) for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError, TypeError):
        return []


class RegistryClient:
    """The v2 API of one registry, for one repository: manifests and blobs.

    HTTPS with certificate checks (the system's CAs via certifi, or ``SSL_CERT_FILE``), or
    plain HTTP when ``insecure_http`` is true. Credentials are ``credentials`` if given, else
    docker's config.json, looked up the first time the registry asks for them.
    """

    def __init__(
        self,
        registry: str,
        repository: str,
        *,
        credentials: Credentials | None = None,
        insecure_http: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.insecure_http = insecure_http
        self.url = f"{'http' if insecure_http else 'https'}://{registry}"
        self.auth = RegistryAuth(
            self.url, repository, credential_source(registry, credentials, env)
        )
        self._client = httpx.Client(
            base_url=self.url,
            auth=self.auth,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
            follow_redirects=True,
            headers={"User-Agent": f"fledge/{__version__}"},
            transport=transport or httpx.HTTPTransport(retries=2),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _open(
        self, path: str, headers: Mapping[str, str], *, what: str
    ) -> Iterator[httpx.Response]:
        request = self._client.build_request("GET", path, headers=dict(headers))
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, what) from None
        try:
            yield response
        finally:
            response.close()

    def _transport_error(self, exc: httpx.TransportError, what: str) -> FledgeError:
        if isinstance(exc, httpx.ConnectError) and _is_tls_failure(exc):
            hint = (
                ""
                if self.insecure_http
                else (
                    "; if the registry serves plain HTTP, pass --insecure-http, and if it uses "
                    "a private CA, point SSL_CERT_FILE at its certificate"
                )
            )
            return FledgeError(f"TLS connection to registry {self.url} failed: {exc}{hint}")
        if isinstance(exc, httpx.ConnectError):
            return FledgeError(
                f"cannot connect to registry {self.url} ({exc}): check the registry address "
                "and that it is reachable"
            )
        if isinstance(exc, httpx.TimeoutException):
            return FledgeError(f"registry {self.url} did not answer in time while {what}")
        return FledgeError(f"talking to registry {self.url} failed while {what}: {exc}")

    def _status_error(
        self,
        response: httpx.Response,
        *,
        image: str,
        kind: Literal["manifest", "blob"],
        name: str,
    ) -> FledgeError:
        response.read()
        code = response.status_code
        if code == 401:
            return self.auth.refused()
        if code == 403:
            return FledgeError(
                f"registry {self.url} denied access to {self.repository}: check that the "
                "account may pull it (pass --creds USER:PASS or log in with docker login)"
            )
        if code == 404 and kind == "manifest":
            if "NAME_UNKNOWN" in _error_codes(response):
                return FledgeError(
                    f"image {image} not found: registry {self.url} has no repository "
                    f"{self.repository}; check the image name"
                )
            return FledgeError(
                f"image {image} not found: registry {self.url} has no manifest {name} in "
                f"{self.repository}; check the tag or digest"
            )
        if code == 404:
            return FledgeError(
                f"registry {self.url} has no blob {name} in {self.repository}, though the "
                f"manifest of {image} lists it; the image in the registry is incomplete"
            )
        if code == 429:
            return FledgeError(
                f"registry {self.url} is rate-limiting pulls (HTTP 429): wait, or log in "
                "(docker login or --creds USER:PASS) for a higher limit"
            )
        if code == 400 and self.insecure_http and "HTTPS" in response.text:
            return FledgeError(
                f"registry {self.registry} speaks HTTPS: drop --insecure-http to pull {image}"
            )
        detail = response.text.strip()[:300]
        return FledgeError(
            f"registry {self.url} answered HTTP {code} {response.reason_phrase} for {kind} "
            f"{name} of {self.repository}{': ' + detail if detail else ''}"
        )

    def get_manifest(self, identifier: str, *, image: str, media_type: str = "") -> Manifest:
        """The manifest or index tagged ``identifier`` or with that digest; a digest is
        checked against the bytes received."""
        path = f"/v2/{self.repository}/manifests/{identifier}"
        accept = ", ".join(MANIFEST_TYPES)
        with self._open(path, {"Accept": accept}, what=f"fetching {image}") as response:
            if response.status_code != 200:
                raise self._status_error(response, image=image, kind="manifest", name=identifier)
            raw = bytearray()
            try:
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_MANIFEST_BYTES:
                        raise FledgeError(
                            f"image {image}: registry {self.url} sent a manifest over "
                            f"{MAX_MANIFEST_BYTES} bytes for {identifier}"
                        )
            except httpx.TransportError as exc:
                raise self._transport_error(exc, f"fetching {image}") from None
        manifest = parse_manifest(
            bytes(raw),
            media_type=response.headers.get("content-type") or media_type,
            where=f"{image} ({self.url})",
        )
        if identifier.startswith("sha256:") and manifest.digest != identifier:
            raise FledgeError(
                f"image {image}: registry {self.url} returned a manifest whose digest is "
                f"{manifest.digest}, not the pinned {identifier}; the registry is not "
                "serving the image you pinned"
            )
        announced = response.headers.get("docker-content-digest", "")
        if announced.startswith("sha256:") and announced != manifest.digest:
            raise FledgeError(
                f"image {image}: registry {self.url} announced digest {announced} but the "
                f"manifest it sent hashes to {manifest.digest}"
            )
        return manifest

    @contextmanager
    def open_blob(self, digest: str, offset: int = 0, *, image: str) -> Iterator[BlobStream]:
        """Stream a blob from ``offset`` (a Range request); the stream's offset is 0 when
        the registry sent the whole blob instead."""
        path = f"/v2/{self.repository}/blobs/{digest}"
        what = f"downloading blob {digest}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._open(path, headers, what=what) as response:
            status = response.status_code
            if status == 200:
                yield BlobStream(0, self._chunks(response, what))
                return
            if status == 206 and offset:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
                if match and int(match.group(1)) == offset:
                    yield BlobStream(offset, self._chunks(response, what))
                    return
            elif status >= 500:
                raise TransferInterrupted(
                    f"registry {self.url} answered HTTP {status} for blob {digest}"
                )
            elif not (offset and status == 416):
                raise self._status_error(response, image=image, kind="blob", name=digest)
        # a range the registry could not serve: fetch the whole blob
        with self._open(path, {}, what=what) as response:
            if response.status_code != 200:
                raise self._status_error(response, image=image, kind="blob", name=digest)
            yield BlobStream(0, self._chunks(response, what))

    def _chunks(self, response: httpx.Response, what: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes()
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.TimeoutException) as exc:
            raise TransferInterrupted(f"{what} from {self.url} broke off: {exc}") from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, what) from None


class RegistryStore:
    """An image in a registry, fetched through the blob cache: manifests by digest and
    blobs already there are not fetched again."""

    def __init__(
        self,
        reference: Reference,
        *,
        image: str,
        cache: BlobCache,
        credentials: Credentials | None = None,
        insecure_http: bool = False,
        env: Mapping[str, str] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.reference = reference
        self.image = image
        self.cache = cache
        self.on_note = on_note
        self.client = RegistryClient(
            reference.registry,
            reference.repository,
            credentials=credentials,
            insecure_http=insecure_http,
            env=env,
        )

    def close(self) -> None:
        self.client.close()

    def root(self) -> Manifest:
        if self.reference.digest:
            return self.manifest(Descriptor("", self.reference.digest, -1))
        manifest = self.client.get_manifest(self.reference.identifier, image=self.image)
        self.cache.put_bytes(manifest.raw, what=self.image, digest=manifest.digest)
        return manifest

    def manifest(self, descriptor: Descriptor) -> Manifest:
        size = descriptor.size if descriptor.size >= 0 else None
        cached = self.cache.get(descriptor.digest, size)
        if cached is not None:
            return parse_manifest(
                cached.read_bytes(),
                media_type=descriptor.media_type,
                where=f"{self.image} (cached manifest {descriptor.digest})",
            )
        manifest = self.client.get_manifest(
            descriptor.digest, image=self.image, media_type=descriptor.media_type
        )
        self.cache.put_bytes(manifest.raw, what=self.image, digest=manifest.digest)
        return manifest

    def blob(self, descriptor: Descriptor, progress: ByteProgress | None = None) -> Path:
        return self.cache.download(
            descriptor.digest,
            descriptor.size,
            lambda offset: self.client.open_blob(descriptor.digest, offset, image=self.image),
            what=f"image {self.image} from {self.client.url}",
            progress=progress,
            on_restart=self.on_note,
        )
