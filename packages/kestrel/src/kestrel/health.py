"""Probing an http workload's health from the event loop (the supervisor's probe).

What is probed, and the probe that runs before the event loop, live in
:mod:`kestrel.healthcheck`.
"""

from __future__ import annotations

import asyncio
import time

from .healthcheck import PROBE_TIMEOUT_S, HealthProbe
from .httpclient import UpstreamError, send_request
from .origin import parse_http_url


async def probe_once(probe: HealthProbe, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """One GET; None when healthy, else why not (``HTTP 503``, ``connection refused``, ...)."""
    try:
        origin = parse_http_url(probe.url)
    except ValueError:
        return f"cannot probe {probe.url}: only http:// URLs are supported"
    try:
        async with asyncio.timeout(timeout_s):
            response = await send_request(origin, "GET", origin.path, connect_timeout=timeout_s)
            status = response.status
            await response.close()
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except UpstreamError as error:
        return str(error)
    return probe.verdict(status)


async def wait_healthy(probe: HealthProbe, since: float | None = None) -> str | None:
    """Probe every ``interval_ms`` until healthy (None) or ``timeout_ms`` passed (last error).

    The deadline counts from ``since`` (a ``time.monotonic()`` value; default: now).
    """
    deadline = (time.monotonic() if since is None else since) + probe.timeout_ms / 1000
    while True:
        remaining = deadline - time.monotonic()
        problem = await probe_once(probe, max(0.05, min(PROBE_TIMEOUT_S, remaining)))
        if problem is None:
            return None
        if time.monotonic() + probe.interval_ms / 1000 >= deadline:
            return problem
        await asyncio.sleep(probe.interval_ms / 1000)
