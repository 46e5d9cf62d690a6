"""A real registry for tests: Debian's ``docker-registry`` (distribution v2.8) on 127.0.0.1.

``run_registry(workdir, auth=...)`` starts one and stops it on exit:

- ``auth="none"``: open;
- ``auth="basic"``: htpasswd (bcrypt, made with ``htpasswd -Bbn``);
- ``auth="token"``: Bearer tokens from ``TokenServer``, a small token service in this
  process that checks basic credentials (or an OAuth2 refresh token) and issues RS256 JWTs
  signed with a key and self-signed certificate made by ``openssl``;

plain HTTP by default, HTTPS with ``tls=True`` (a self-signed certificate for 127.0.0.1 in
``Registry.ca_cert``). ``Registry.requests()`` reads what the registry served from its JSON
log (method, URI, status, bytes), so tests can count blob GETs or spot a 206.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import httpx

from support.guest import free_port
from support.oci_images import Image, Index, push

REGISTRY_BINARY = "/usr/bin/docker-registry"
USERNAME = "alice"
PASSWORD = "wonderland"
REFRESH_TOKEN = "alice-refresh-token"
"""The OAuth2 refresh token (docker config.json ``identitytoken``) TokenServer accepts."""
SERVICE = "fledge-test-registry"
ISSUER = "fledge-test-token-issuer"

Auth = Literal["none", "basic", "token"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_certificate(directory: Path, name: str, *, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed RSA certificate for ``ip`` (and CN ``name``); returns (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=IP:{ip}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class TokenRequest:
    """One request the token service answered."""

    method: str
    params: dict[str, list[str]]
    user: str | None
    status: int


class TokenServer:
    """A Docker token service (``GET /token?service=…&scope=…``, and OAuth2 ``POST /token``)
    on 127.0.0.1. Valid credentials get every action asked for; anonymous requests get
    ``pull`` only if ``anonymous_pull``; bad credentials get 401. ``token_field`` says whether
    the answer carries ``token``, ``access_token`` or both."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str],
        anonymous_pull: bool = False,
        token_field: Literal["token", "access_token", "both"] = "token",
        expires_in: int = 300,
    ) -> None:
        self.users = dict(users)
        self.anonymous_pull = anonymous_pull
        self.token_field = token_field
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []
        self.cert, self.key = make_certificate(workdir, "token-issuer")
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def sign(self, access: list[dict[str, Any]], subject: str) -> str:
        """An RS256 JWT the registry accepts, granting ``access``."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, scopes: list[str], user: str | None) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                wanted = [a for a in actions.split(",") if a]
                allowed = wanted if user else (["pull"] if self.anonymous_pull else [])
                granted = [a for a in wanted if a in allowed or (a == "*" and user)]
                access.append({"type": "repository", "name": name, "actions": granted})
        return access

    def _answer(self, scopes: list[str], user: str | None) -> dict[str, Any]:
        token = self.sign(self._grant(scopes, user), user or "")
        answer: dict[str, Any] = {
            "expires_in": self.expires_in,
            "issued_at": "2023-11-14T22:13:20Z",
        }
        if self.token_field in ("token", "both"):
            answer["token"] = token
        if self.token_field in ("access_token", "both"):
            answer["access_token"] = token
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(
                self,
                status: int,
                body: dict[str, Any],
                params: dict[str, list[str]],
                user: str | None,
            ) -> None:
                with server._lock:
                    server.requests.append(TokenRequest(self.command, params, user, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                params = parse_qs(urlparse(self.path).query)
                user: str | None = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        self._reply(
                            401, {"details": "incorrect username or password"}, params, name
                        )
                        return
                    user = name
                self._reply(200, server._answer(params.get("scope", []), user), params, user)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                user: str | None = None
                if grant == "refresh_token" and form.get("refresh_token", [""])[0] == REFRESH_TOKEN:
                    user = USERNAME
                elif grant == "password":
                    name = form.get("username", [""])[0]
                    if server.users.get(name) == form.get("password", [""])[0]:
                        user = name
                if user is None:
                    self._reply(401, {"error": "invalid_grant"}, form, None)
                    return
                body = server._answer(form.get("scope", []), user)
                body["access_token"] = body.pop("token", body.get("access_token"))
                self._reply(200, body, form, user)

        return Handler


@dataclass
class RegistryRequest:
    """One request the registry logged."""

    method: str
    uri: str
    status: int
    written: int


class _PushAuth(httpx.Auth):
    """Just enough of the challenge dance for pushing test images (independent of fledge's)."""

    def __init__(self, username: str, password: str) -> None:
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("www-authenticate", "")
        if challenge.lower().startswith("basic"):
            request.headers["Authorization"] = self.basic
        else:
            params = dict(
                (key, value.strip('"'))
                for key, _, value in (part.partition("=") for part in _split_params(challenge[7:]))
            )
            token_response = yield httpx.Request(
                "GET",
                params["realm"],
                params={"service": params.get("service", ""), "scope": params.get("scope", "")},
                headers={"Authorization": self.basic},
            )
            token_response.read()
            request.headers["Authorization"] = f"Bearer {token_response.json()['token']}"
        yield request


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


@dataclass
class Registry:
    """A running registry. ``host`` is what goes in image references (``127.0.0.1:PORT``)."""

    host: str
    url: str
    auth: Auth
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    ca_cert: Path | None = None
    token_server: TokenServer | None = None

    @property
    def insecure_http(self) -> bool:
        """What fledge needs to be told to reach this registry."""
        return self.url.startswith("http://")

    @property
    def creds(self) -> str | None:
        """``USER:PASS`` for ``--creds``, None for an open registry."""
        return f"{self.username}:{self.password}" if self.username else None

    def reference(
        self, repository: str, tag: str | None = "latest", digest: str | None = None
    ) -> str:
        text = f"{self.host}/{repository}"
        if tag:
            text += f":{tag}"
        if digest:
            text += f"@{digest}"
        return text

    def client(self) -> httpx.Client:
        """An httpx client for the v2 API, logged in as the registry's user."""
        auth = _PushAuth(self.username, self.password or "") if self.username else None
        verify: Any = ssl.create_default_context(cafile=self.ca_cert) if self.ca_cert else True
        return httpx.Client(base_url=self.url, auth=auth, verify=verify, timeout=30)

    def push(
        self,
        repository: str,
        image: Image | Index,
        *,
        tag: str | None = "latest",
        chunked: bool = False,
    ) -> str:
        """Push ``image`` (see support.oci_images.push); returns its digest."""
        with self.client() as client:
            return push(client, repository, image, tag=tag, chunked=chunked)

    def requests(self, since: int = 0) -> list[RegistryRequest]:
        """Requests the registry has completed, from its log, after ``mark()`` = ``since``."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines()[since:]:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "http.request.uri" in record and "http.response.status" in record:
                found.append(
                    RegistryRequest(
                        record.get("http.request.method", ""),
                        record["http.request.uri"],
                        int(record["http.response.status"]),
                        int(record.get("http.response.written", 0)),
                    )
                )
        return found

    def mark(self) -> int:
        """A position in the log for ``requests(since=...)``."""
        return len(self.log.read_text(errors="replace").splitlines())

    def blob_gets(self, since: int = 0) -> list[RegistryRequest]:
        """The blob downloads (GET …/blobs/sha256:…) since ``mark()``."""
        return [r for r in self.requests(since) if r.method == "GET" and "/blobs/sha256:" in r.uri]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.token_server is not None:
            self.token_server.stop()


def _config(
    workdir: Path, port: int, auth: Auth, tls: tuple[Path, Path] | None, token: TokenServer | None
) -> dict[str, Any]:
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "fledge-tests"}
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "maintenance": {"uploadpurging": {"enabled": False}},
            "delete": {"enabled": True},
        },
        "http": http,
    }
    if auth == "basic":
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", USERNAME, PASSWORD], check=True, capture_output=True, text=True
        ).stdout
        (workdir / "htpasswd").write_text(htpasswd)
        config["auth"] = {"htpasswd": {"realm": "fledge-tests", "path": str(workdir / "htpasswd")}}
    elif auth == "token":
        assert token is not None
        config["auth"] = {
            "token": {
                "realm": token.url,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(token.cert),
            }
        }
    return config


@contextmanager
def run_registry(
    workdir: Path,
    *,
    auth: Auth = "none",
    tls: bool = False,
    anonymous_pull: bool = False,
    token_field: Literal["token", "access_token", "both"] = "token",
    timeout: float = 30,
) -> Iterator[Registry]:
    """Start ``docker-registry`` in ``workdir`` (config, storage, log) on a free port of
    127.0.0.1; yields once it answers ``/v2/``, stops it (and the token service) on exit."""
    if not Path(REGISTRY_BINARY).exists():
        raise RuntimeError("docker-registry is required: apt-get install docker-registry")
    if auth == "basic" and shutil.which("htpasswd") is None:
        raise RuntimeError("htpasswd is required: apt-get install apache2-utils")
    workdir.mkdir(parents=True, exist_ok=True)
    token = (
        TokenServer(
            workdir,
            users={USERNAME: PASSWORD},
            anonymous_pull=anonymous_pull,
            token_field=token_field,
        )
        if auth == "token"
        else None
    )
    certificate = make_certificate(workdir, "registry") if tls else None
    registry: Registry | None = None
    try:
        for _attempt in range(3):
            port = free_port()
            config = workdir / "config.yml"
            config.write_text(
                json.dumps(_config(workdir, port, auth, certificate, token), indent=2)
            )
            log = workdir / "registry.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [REGISTRY_BINARY, "serve", str(config)],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            registry = Registry(
                host=f"127.0.0.1:{port}",
                url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
                auth=auth,
                root=workdir,
                log=log,
                process=process,
                username=USERNAME if auth != "none" else None,
                password=PASSWORD if auth != "none" else None,
                ca_cert=certificate[0] if certificate else None,
                token_server=token,
            )
            if _wait_ready(registry, timeout):
                break
            registry.token_server = None  # kept for the next attempt
            registry.stop()
            registry = None
        if registry is None:
            raise RuntimeError(
                f"docker-registry did not start; log:\n{(workdir / 'registry.log').read_text()}"
            )
        yield registry
    finally:
        if registry is not None:
            registry.stop()
        elif token is not None:
            token.stop()


def _wait_ready(registry: Registry, timeout: float) -> bool:
    verify: Any = ssl.create_default_context(cafile=registry.ca_cert) if registry.ca_cert else True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            return False
        try:
            status = httpx.get(f"{registry.url}/v2/", verify=verify, timeout=2).status_code
        except httpx.TransportError:
            status = 0
        if status in (200, 401):
            return True
        time.sleep(0.05)
    return False
