"""volantd serve: liveness, request ids, error format, the API key, refusing unsafe listens."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from support.volantd import VOLANTD, Volantd, running_volantd, volantd_env

pytestmark = pytest.mark.integration

KEY = "correct-horse-battery-staple"


def test_healthz_and_system_info(volantd: Volantd) -> None:
    with volantd.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        info = client.get("/api/v1/system/info").json()
    assert info["home"] == str(volantd.home) and info["auth"] is False


def test_every_response_carries_a_request_id_and_errors_have_one_shape(volantd: Volantd) -> None:
    with volantd.client() as client:
        mine = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        missing = client.get("/api/v1/plugins/no-such-plugin")
    assert missing.status_code == 404
    body = missing.json()
    assert body["error"] == 'plugin "no-such-plugin" not found'
    assert body["request_id"] == missing.headers["x-request-id"]
    assert len(body["request_id"]) == 32
    # the request is in the log with its id
    assert body["request_id"] in volantd.logs()


def test_unknown_routes_and_malformed_json(volantd: Volantd) -> None:
    with volantd.client() as client:
        unknown = client.get("/api/v1/nothing-here")
        malformed = client.post(
            "/api/v1/plugins", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert unknown.status_code == 404 and "error" in unknown.json()
    assert malformed.status_code == 400 and "JSON" in malformed.json()["error"]


def test_openapi_document_lists_the_api(volantd: Volantd) -> None:
    with volantd.client() as client:
        document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "volantd"
    assert "/api/v1/plugins" in document["paths"] and "/healthz" in document["paths"]


def test_api_key_guards_everything_but_healthz(tmp_path: Path) -> None:
    with running_volantd(tmp_path / "home", api_key=KEY) as daemon:
        with daemon.client(api_key="") as anonymous:
            assert anonymous.get("/healthz").status_code == 200
            refused = anonymous.get("/api/v1/plugins")
            assert refused.status_code == 401 and "API key" in refused.json()["error"]
            assert anonymous.get("/openapi.json").status_code == 401
            wrong = anonymous.get("/api/v1/plugins", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            upstream_style = anonymous.get("/api/v1/plugins", headers={"X-Volant-API-Key": KEY})
            assert upstream_style.status_code == 200
        with daemon.client() as client:
            assert client.get("/api/v1/plugins").json() == {"plugins": [], "items": []}


def run_serve(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOLANTD), "serve", *args],
        env=volantd_env(home, env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_refuses_a_public_listen_address_without_a_key(tmp_path: Path) -> None:
    result = run_serve(tmp_path / "home", "--listen", "0.0.0.0:0")
    assert result.returncode == 2
    assert "without an API key" in result.stderr and "--allow-remote-without-key" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--listen", "localhost"], {}, "is not HOST:PORT"),
        (["--log-level", "loud"], {}, "log level 'loud'"),
        ([], {"VOLANT_API_KEY": "short"}, "at least 16 characters"),
        ([], {"VOLANT_STOP_VMS_ON_EXIT": "maybe"}, "VOLANT_STOP_VMS_ON_EXIT='maybe'"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, args: list[str], env: dict, message: str) -> None:
    result = run_serve(tmp_path / "home", *args, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "volantd.sock"
    home = tmp_path / "home"
    home.mkdir()
    with (home / "log").open("wb") as log:
        process = subprocess.Popen(
            [str(VOLANTD), "serve", "--socket", str(socket_path)],
            env=volantd_env(home), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        transport = httpx.HTTPTransport(uds=str(socket_path))
        with httpx.Client(transport=transport, base_url="http://volantd") as client:
            from support.guest import wait_for

            def answers() -> bool:
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(answers, 30, "volantd on its unix socket")
    finally:
        process.terminate()
        # a clean shutdown: uvicorn finishes, then re-raises SIGTERM (systemd counts it clean)
        assert process.wait(20) in (0, -signal.SIGTERM)
    assert not socket_path.exists()
