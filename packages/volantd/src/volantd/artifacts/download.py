"""HTTP downloads: streamed with httpx into a StagedBlob, with a size limit and a deadline."""

from __future__ import annotations

import asyncio
import os

import httpx

from volantd.artifacts.errors import (
    ArtifactConnectionError,
    ArtifactHTTPError,
    ArtifactNotFoundError,
    ArtifactTimeoutError,
    ArtifactTooLargeError,
)
from volantd.artifacts.sources import HttpSource
from volantd.artifacts.staging import StagedBlob

_GONE = (404, 410)


async def download(source: HttpSource, blob: StagedBlob, *, timeout_s: float) -> None:
    """Stream `source` into `blob`, following redirects.

    `timeout_s` bounds connecting, and also the whole exchange from the request to the last
    byte, so a server that trickles its answer cannot hold a fetch forever.
    """
    url = source.url
    try:
        async with (
            asyncio.timeout(timeout_s),
            httpx.AsyncClient(
                follow_redirects=True,
                timeout=httpx.Timeout(timeout_s),
                headers={"Accept-Encoding": "identity"},
            ) as client,
            client.stream("GET", url) as response,
        ):
            _check_status(source, response)
            _check_length(source, response, blob.max_bytes)
            async for chunk in response.aiter_bytes():
                blob.write(chunk)
    except httpx.ConnectTimeout as exc:
        raise ArtifactTimeoutError(url, timeout_s=timeout_s, phase="connecting to") from exc
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ArtifactTimeoutError(url, timeout_s=timeout_s, phase="downloading") from exc
    except httpx.ConnectError as exc:
        reason = _reason(exc)
        raise ArtifactConnectionError(
            f"cannot connect to {source.host} to download {url}: {reason}; check the URL "
            "and that the server is up and reachable from this host",
            source=url,
            host=source.host,
            reason=reason,
        ) from exc
    except httpx.TooManyRedirects as exc:
        raise ArtifactHTTPError(
            f"downloading {url} failed: too many redirects ({_reason(exc)})", source=url
        ) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        reason = _reason(exc)
        raise ArtifactConnectionError(
            f"the connection to {source.host} broke while downloading {url}: {reason}; "
            "nothing was stored, try again",
            source=url,
            host=source.host,
            reason=reason,
        ) from exc
    except httpx.HTTPError as exc:
        raise ArtifactHTTPError(f"downloading {url} failed: {_reason(exc)}", source=url) from exc


def _check_status(source: HttpSource, response: httpx.Response) -> None:
    if response.is_success:
        return
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    where = source.url
    if response.history:
        where += f" (redirected to {response.url})"
    if response.status_code in _GONE:
        raise ArtifactNotFoundError(
            f"artifact {where} was not found: the server answered {status}; "
            "check the URL in the manifest",
            source=source.url,
            status=response.status_code,
        )
    raise ArtifactHTTPError(
        f"downloading {where} failed: the server answered {status}",
        source=source.url,
        status=response.status_code,
    )


def _check_length(source: HttpSource, response: httpx.Response, limit: int) -> None:
    try:
        announced = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return
    if announced > limit:
        raise ArtifactTooLargeError(source.url, limit=limit, size=announced)


def _reason(exc: BaseException) -> str:
    """What went wrong, from the innermost OSError when there is one (httpx's own message
    for a refused connection is "All connection attempts failed")."""
    reason = str(exc) or type(exc).__name__
    cause: BaseException | None = exc
    for _ in range(16):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno is not None:
            reason = os.strerror(cause.errno) if cause.errno > 0 else str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return reason
