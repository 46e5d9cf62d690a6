"""The HTTP client of volantd: where it is, the API key, and errors people can act on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:7777"


class VolarError(Exception):
    """A failure to report on stderr in one line (exit status 1)."""


class APIError(VolarError):
    """volantd answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


def resolve_api(api: str | None) -> str:
    """``--api``, else ``VOLANT_API_BASE``, else the local default; ``unix:/path`` for a socket."""
    return api or os.environ.get("VOLANT_API_BASE") or DEFAULT_API


class Client:
    """A thin, synchronous client: JSON in and out, errors raised as :class:`VolarError`."""

    def __init__(self, api: str | None = None, api_key: str | None = None, timeout: float = 300):
        self.api = resolve_api(api)
        key = api_key or os.environ.get("VOLANT_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if self.api.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=self.api.removeprefix("unix:"))
            self._http = httpx.Client(
                transport=transport, base_url="http://volantd", headers=headers, timeout=timeout
            )
        else:
            self._http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout)

    def request(
        self, method: str, path: str, *, check: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send a request; transport failures raise :class:`VolarError`, and so do error
        statuses unless ``check`` is false."""
        with self._transport_errors():
            response = self._http.request(method, path, **kwargs)
        if check:
            _raise_for_status(response)
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives (``iter_lines``, ``iter_bytes``).

        Error statuses raise :class:`VolarError` before the body is handed out; a connection
        lost while reading raises it too.
        """
        with self._transport_errors(), self._http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_status(response)
            yield response

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            raise VolarError(
                f"cannot reach volantd at {self.api}: is it running? (start it with "
                "`volantd serve`, or point --api / VOLANT_API_BASE at it)"
            ) from None
        except httpx.TimeoutException:
            raise VolarError(f"volantd at {self.api} did not answer in time") from None
        except httpx.HTTPError as error:
            raise VolarError(f"talking to volantd at {self.api} failed: {error}") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("PATCH", path, json=body, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)


def _raise_for_status(response: httpx.Response) -> None:
    """Raise :class:`APIError` with volantd's ``error`` message for a status >= 400."""
    if response.status_code < 400:
        return
    try:
        message = response.json().get("error") or response.text
    except (ValueError, AttributeError):
        message = response.text.strip() or response.reason_phrase
    raise APIError(response.status_code, message)
