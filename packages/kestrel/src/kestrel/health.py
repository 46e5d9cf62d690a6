"""Health of an http workload: GET ``base_url`` + ``health_check.endpoint`` until it answers.

The deadline is the manifest's ``timeout_ms`` as given (upstream floored it at two minutes).
Without a ``health_check`` an http workload is healthy once ``base_url`` answers at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple
from urllib.parse import urljoin

from .config import DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_TIMEOUT_MS, Workload
from .httpclient import UpstreamError, parse_http_url, send_request

PROBE_TIMEOUT_S = 2.0
"""Per-probe limit (connect + response head), so one stuck probe cannot eat the deadline."""


class HealthProbe(NamedTuple):
    """What to probe, for how long and how often."""

    url: str
    timeout_ms: int
    interval_ms: int
    any_status: bool
    """True: any HTTP answer counts (no health_check configured); False: only 2xx."""


def health_probe(workload: Workload) -> HealthProbe | None:
    """The probe of an http workload; None for process workloads."""
    if workload.type != "http" or not workload.base_url:
        return None
    check = workload.health_check
    if check is None:
        return HealthProbe(
            workload.base_url, DEFAULT_HEALTH_TIMEOUT_MS, DEFAULT_HEALTH_INTERVAL_MS, True
        )
    url = urljoin(workload.base_url, check.endpoint)
    return HealthProbe(url, check.timeout_ms, check.interval_ms, False)


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
    if probe.any_status or 200 <= status < 300:
        return None
    return f"HTTP {status}"


async def wait_healthy(probe: HealthProbe) -> str | None:
    """Probe every ``interval_ms`` until healthy (None) or ``timeout_ms`` passed (last error)."""
    deadline = time.monotonic() + probe.timeout_ms / 1000
    while True:
        remaining = deadline - time.monotonic()
        problem = await probe_once(probe, max(0.05, min(PROBE_TIMEOUT_S, remaining)))
        if problem is None:
            return None
        if time.monotonic() + probe.interval_ms / 1000 >= deadline:
            return problem
        await asyncio.sleep(probe.interval_ms / 1000)
