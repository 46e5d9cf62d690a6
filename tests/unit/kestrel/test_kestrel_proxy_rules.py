"""Proxy path joining, hop-by-hop filtering, health URLs and --listen parsing."""

from __future__ import annotations

import asyncio

import pytest

from kestrel.config import HealthCheck, RestartPolicy, Workload
from kestrel.errors import KestrelError
from kestrel.health import wait_healthy
from kestrel.healthcheck import health_probe
from kestrel.listeners import parse_listen
from kestrel.origin import Origin, parse_http_url
from kestrel.proxy import end_to_end, join_path


@pytest.mark.parametrize(
    ("base", "rest", "expected"),
    [
        ("/", "/users", "/users"),
        ("/api", "/users", "/api/users"),
        ("/api/", "users/1", "/api/users/1"),
        ("/api", "", "/api"),
        ("/", "", "/"),
        ("/api?x=1", "/a", "/api/a"),
    ],
)
def test_join_keeps_the_base_path(base: str, rest: str, expected: str) -> None:
    assert join_path(base, rest) == expected


def test_hop_by_hop_headers_are_dropped() -> None:
    headers = [
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("Content-Type", "text/plain"),
        ("X-End", "2"),
    ]
    assert end_to_end(headers) == [("Content-Type", "text/plain"), ("X-End", "2")]


def test_http_urls() -> None:
    assert parse_http_url("http://127.0.0.1:8000/api") == Origin("127.0.0.1", 8000, "/api")
    assert parse_http_url("http://localhost") == Origin("localhost", 80, "/")
    assert parse_http_url("http://[::1]:81/").authority == "[::1]:81"
    with pytest.raises(ValueError):
        parse_http_url("https://example.test/")


def _workload(base_url: str | None, check: HealthCheck | None, kind: str = "http") -> Workload:
    return Workload(kind, ("/bin/app",), (), {}, "/", None, RestartPolicy(), base_url, check)


def test_health_probe_urls_and_deadlines() -> None:
    probe = health_probe(_workload("http://127.0.0.1:9000/api/", HealthCheck("healthz", 1500, 20)))
    assert probe is not None
    assert (probe.url, probe.timeout_ms, probe.interval_ms) == (
        "http://127.0.0.1:9000/api/healthz",
        1500,
        20,
    )
    assert not probe.any_status
    absolute = health_probe(_workload("http://127.0.0.1:9000/api/", HealthCheck("/ready")))
    assert absolute is not None and absolute.url == "http://127.0.0.1:9000/ready"
    unchecked = health_probe(_workload("http://127.0.0.1:9000/", None))
    assert unchecked is not None and unchecked.any_status
    assert health_probe(_workload(None, None, "process")) is None


def test_a_probe_of_an_https_url_reports_why_it_cannot_succeed() -> None:
    probe = health_probe(_workload("https://127.0.0.1:9443/", HealthCheck("/", 100, 10)))
    assert probe is not None
    assert asyncio.run(wait_healthy(probe)) == (
        "cannot probe https://127.0.0.1:9443/: only http:// URLs are supported"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9000", ("0.0.0.0", 9000)),
        ("[::1]:0", ("::1", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("bad", ["8080", "host:", "host:http", "h:70000"])
def test_bad_listen_addresses(bad: str) -> None:
    with pytest.raises(KestrelError, match="HOST:PORT"):
        parse_listen(bad)
