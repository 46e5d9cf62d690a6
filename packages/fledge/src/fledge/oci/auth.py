"""Registry credentials (``--creds``, docker ``config.json``, credential helpers) and the
``WWW-Authenticate`` challenge dance (Bearer tokens per scope, Basic)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import FledgeError
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
"""The key ``docker login`` files Docker Hub credentials under."""
HELPER_TIMEOUT_S = 30


@dataclass(frozen=True)
class Credentials:
    """A user name and password, or an OAuth2 refresh token (``identitytoken``)."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)
    origin: str = "--creds"
    """Where they came from, for messages (``--creds``, a config.json path, a helper)."""

    def basic_header(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def parse_creds(text: str) -> Credentials:
    """``USER:PASS`` as given to ``--creds``; the password may contain colons."""
    username, colon, password = text.partition(":")
    if not colon or not username:
        raise FledgeError("--creds must be USER:PASS (for example --creds alice:s3cret)")
    return Credentials(username, password)


# --- docker config.json --------------------------------------------------------------------


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    env = os.environ if env is None else env
    folder = env.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _host_of(key: str) -> str:
    """The registry host a config.json key names: ``https://host:5000/v1/`` → ``host:5000``."""
    host = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", key.strip())
    return host.split("/", 1)[0].lower()


def _same_registry(key: str, registry: str) -> bool:
    host = _host_of(key)
    if registry.lower() in DOCKER_HUB_ALIASES:
        return host in DOCKER_HUB_ALIASES
    return host == registry.lower()


def lookup_credentials(
    registry: str, *, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """Credentials for ``registry`` from docker's ``config.json``: its ``credHelpers`` entry,
    else ``credsStore``, else the ``auths`` entry (``auth`` base64, or username/password, or
    ``identitytoken``). None when nothing is configured for that registry.

    Raises FledgeError naming the file when it is unreadable, and naming the helper when a
    configured ``docker-credential-<name>`` is missing or fails.
    """
    path = docker_config_path(env)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise FledgeError(f"{path}: cannot read docker credentials ({exc})") from None
    if not isinstance(data, dict):
        raise FledgeError(f"{path}: is not a JSON object")
    helpers = data.get("credHelpers")
    helper = next(
        (
            name
            for key, name in (helpers.items() if isinstance(helpers, dict) else ())
            if _same_registry(key, registry) and isinstance(name, str) and name
        ),
        None,
    )
    store = data.get("credsStore")
    if helper is None and isinstance(store, str) and store:
        helper = store
    if helper is not None:
        server = DOCKER_HUB_AUTH_KEY if registry in DOCKER_HUB_ALIASES else registry
        return _from_helper(helper, server, registry=registry, config=path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _same_registry(key, registry) and isinstance(entry, dict):
            found = _from_auth_entry(entry, where=f"{path} (auths.{key})")
            if found is not None:
                return found
    return None


def _from_auth_entry(entry: Mapping[str, object], *, where: str) -> Credentials | None:
    token = entry.get("identitytoken")
    identity = token if isinstance(token, str) and token else None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise FledgeError(f"{where}: 'auth' is not base64 of USER:PASS") from None
        username, colon, password = pair.partition(":")
        if not colon:
            raise FledgeError(f"{where}: 'auth' does not decode to USER:PASS")
        return Credentials(username, password, identity, origin=where)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name:
        return Credentials(name, str(secret or ""), identity, origin=where)
    if identity:
        return Credentials("", "", identity, origin=where)
    return None


def _from_helper(name: str, server: str, *, registry: str, config: Path) -> Credentials | None:
    program = f"docker-credential-{name}"
    executable = shutil.which(program)
    if executable is None:
        raise FledgeError(
            f"{config} names the credential helper {name!r} for {registry}, but {program} is "
            f"not on PATH: install it, remove it from {config}, or pass --creds USER:PASS"
        )
    try:
        result = subprocess.run(
            [executable, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FledgeError(f"credential helper {program} failed for {registry}: {exc}") from None
    if result.returncode != 0:
        said = (result.stdout + result.stderr).strip()
        if "credentials not found" in said.lower():
            return None
        raise FledgeError(
            f"credential helper {program} failed for {registry} (exit {result.returncode}): "
            f"{said or 'no output'}; log in again with docker login or pass --creds USER:PASS"
        )
    try:
        answer = json.loads(result.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise FledgeError(
            f"credential helper {program} gave an answer for {registry} that is not "
            '{"Username": …, "Secret": …}'
        ) from None
    if username == "<token>":
        return Credentials("", "", secret, origin=program)
    return Credentials(username, secret, origin=program)


# --- WWW-Authenticate ----------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAM = re.compile(r"""([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)""")


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme (lower-case) and its parameters
    (names lower-case, quoted values unquoted)."""

    scheme: str
    params: Mapping[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in a ``WWW-Authenticate`` value (RFC 9110 §11.6.1)."""
    challenges: list[Challenge] = []
    pos, end = 0, len(header)
    while pos < end:
        while pos < end and header[pos] in " \t,":
            pos += 1
        scheme = _TOKEN.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while True:
            at = pos
            while at < end and header[at] in " \t,":
                at += 1
            param = _PARAM.match(header, at)
            if param is None:  # the next scheme (or a token68, which no registry sends)
                break
            name, value = param.group(1).lower(), param.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[name] = value
            pos = param.end()
        challenges.append(Challenge(scheme.group(0).lower(), params))
    return challenges


# --- the auth flow -------------------------------------------------------------------------


class RegistryAuth(httpx.Auth):
    """Answers registry challenges for one repository: fetches Bearer tokens from the
    challenge's realm (with basic credentials, or an identity token, when there are any),
    caches them per scope, and sends Basic credentials when that is what is asked.

    Credentials are looked up only when a challenge asks for them. Errors from the token
    service raise FledgeError; a 401 the registry keeps answering is left to the caller.
    """

    def __init__(
        self,
        registry_url: str,
        repository: str,
        credentials: Callable[[], Credentials | None],
    ) -> None:
        self.registry_url = registry_url
        self.repository = repository
        self._lookup = credentials
        self._looked_up = False
        self._credentials: Credentials | None = None
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._header: str | None = None
        self._lock = threading.Lock()
        self.token_requests = 0

    @property
    def credentials(self) -> Credentials | None:
        """The credentials in use (looked up on first need)."""
        with self._lock:
            if not self._looked_up:
                self._credentials = self._lookup()
                self._looked_up = True
            return self._credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self._header
        if sent:
            request.headers["Authorization"] = sent
        response = yield request
        if response.status_code != 401:
            return
        challenges = {
            c.scheme: c for c in parse_challenges(response.headers.get("www-authenticate", ""))
        }
        if "bearer" in challenges:
            challenge = challenges["bearer"]
            key = (
                challenge.params.get("realm", ""),
                challenge.params.get("service", ""),
                challenge.params.get("scope", f"repository:{self.repository}:pull"),
            )
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic() and f"Bearer {cached[0]}" != sent:
                header = f"Bearer {cached[0]}"
            else:
                token_request = self._token_request(*key)
                token_response = yield token_request
                token_response.read()
                token, expires_in = self._token_from(token_response, realm=key[0])
                self._tokens[key] = (token, time.monotonic() + max(expires_in - 10, 1))
                header = f"Bearer {token}"
        elif "basic" in challenges:
            credentials = self.credentials
            if credentials is None or not credentials.username:
                return
            header = credentials.basic_header()
            if header == sent:
                return
        else:
            return
        self._header = header
        request.headers["Authorization"] = header
        yield request

    def _token_request(self, realm: str, service: str, scope: str) -> httpx.Request:
        if not realm.startswith(("https://", "http://")):
            raise FledgeError(
                f"registry {self.registry_url} sent a Bearer challenge without a usable realm "
                f"({realm!r}); it cannot be logged in to"
            )
        credentials = self.credentials
        scopes = scope.split(" ") if scope else []
        if credentials and credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": "fledge",
                "access_type": "offline",
            }
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(scopes)
            return httpx.Request("POST", realm, data=form)
        params = httpx.QueryParams([("service", service)] if service else [])
        for scope_item in scopes:
            params = params.add("scope", scope_item)
        headers = {}
        if credentials and credentials.username:
            headers["Authorization"] = credentials.basic_header()
        return httpx.Request("GET", realm, params=params, headers=headers)

    def _token_from(self, response: httpx.Response, *, realm: str) -> tuple[str, float]:
        self.token_requests += 1
        if response.status_code in (401, 403):
            raise self.refused()
        if response.status_code != 200:
            raise FledgeError(
                f"token service {realm} of registry {self.registry_url} answered HTTP "
                f"{response.status_code} for {self.repository}: {response.text[:200].strip()}"
            )
        try:
            answer = response.json()
            token = answer.get("token") or answer.get("access_token")
            expires_in = float(answer.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise FledgeError(
                f"token service {realm} of registry {self.registry_url} answered without a "
                "'token' or 'access_token'"
            )
        return token, expires_in

    def refused(self) -> FledgeError:
        """The error for a registry (or its token service) refusing us."""
        credentials = self.credentials
        if credentials is None:
            return FledgeError(
                f"registry {self.registry_url} needs credentials for {self.repository} (or "
                "it does not exist there): pass --creds USER:PASS or log in with docker login"
            )
        return FledgeError(
            f"registry {self.registry_url} refused the credentials for {self.repository} "
            f"(from {credentials.origin}): pass --creds USER:PASS or log in with docker login"
        )


def credential_source(
    registry: str, explicit: Credentials | None, env: Mapping[str, str] | None = None
) -> Callable[[], Credentials | None]:
    """What RegistryAuth calls for credentials: ``explicit`` if given, else config.json."""
    if explicit is not None:
        return lambda: explicit
    return lambda: lookup_credentials(
        DOCKER_HUB if registry in DOCKER_HUB_ALIASES else registry, env=env
    )
