"""Where registry credentials come from, and how challenges are read."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from fledge.errors import FledgeError
from fledge.oci.auth import (
    Credentials,
    docker_config_path,
    lookup_credentials,
    parse_challenges,
    parse_creds,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def docker_config(tmp_path: Path, data: dict[str, object]) -> dict[str, str]:
    folder = tmp_path / "docker"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(folder), "PATH": os.environ.get("PATH", "")}


def helper(tmp_path: Path, name: str, script: str) -> None:
    """A docker-credential-NAME on PATH that runs ``script`` (reads the server on stdin)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_explicit_creds_split_at_the_first_colon() -> None:
    assert parse_creds("alice:pa:ss") == Credentials("alice", "pa:ss")
    for bad in ("alice", ":secret", ""):
        with pytest.raises(FledgeError, match="USER:PASS"):
            parse_creds(bad)


def test_config_path_honours_docker_config(tmp_path: Path) -> None:
    assert docker_config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert docker_config_path({}) == Path.home() / ".docker" / "config.json"


def test_auths_entries_match_the_registry_host(tmp_path: Path) -> None:
    env = docker_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
                "registry.example:5000": {"auth": b64("bob:b:pw")},
                "https://other.example/v2/": {"username": "carol", "password": "pw3"},
                "token.example": {"identitytoken": "refresh-me"},
            }
        },
    )
    hub = lookup_credentials("registry-1.docker.io", env=env)
    assert hub is not None and (hub.username, hub.password) == ("hubuser", "hubpass")
    found = lookup_credentials("registry.example:5000", env=env)
    assert found is not None and (found.username, found.password) == ("bob", "b:pw")
    other = lookup_credentials("other.example", env=env)
    assert other is not None and (other.username, other.password) == ("carol", "pw3")
    token = lookup_credentials("token.example", env=env)
    assert token is not None and token.identity_token == "refresh-me"
    assert lookup_credentials("registry.example", env=env) is None
    assert "config.json" in found.origin


def test_no_config_file_means_no_credentials(tmp_path: Path) -> None:
    assert lookup_credentials("registry.example", env={"DOCKER_CONFIG": str(tmp_path)}) is None


def test_a_broken_auth_entry_names_the_file(tmp_path: Path) -> None:
    env = docker_config(tmp_path, {"auths": {"registry.example": {"auth": "%%%"}}})
    with pytest.raises(FledgeError, match=r"config\.json \(auths\.registry\.example\)"):
        lookup_credentials("registry.example", env=env)


def test_credential_helpers_are_asked_with_the_server_on_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(
        tmp_path,
        "fake",
        'read server\necho "{\\"ServerURL\\": \\"$server\\", \\"Username\\": \\"helper-user\\", '
        '\\"Secret\\": \\"for-$server\\"}"\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env = docker_config(
        tmp_path,
        {"credHelpers": {"registry.example": "fake"}, "auths": {"registry.example": {}}},
    )
    found = lookup_credentials("registry.example", env=env)
    assert found is not None
    assert (found.username, found.password) == ("helper-user", "for-registry.example")
    assert found.origin == "docker-credential-fake"


def test_creds_store_applies_to_docker_hub_with_its_legacy_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(
        tmp_path,
        "store",
        'read server\necho "{\\"Username\\": \\"<token>\\", \\"Secret\\": \\"$server\\"}"\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env = docker_config(tmp_path, {"credsStore": "store"})
    found = lookup_credentials("registry-1.docker.io", env=env)
    assert found is not None and found.identity_token == "https://index.docker.io/v1/"


def test_a_helper_without_credentials_means_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path, "empty", "echo 'credentials not found in native keychain'\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env = docker_config(tmp_path, {"credsStore": "empty"})
    assert lookup_credentials("registry.example", env=env) is None


def test_a_missing_helper_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    env = docker_config(tmp_path, {"credHelpers": {"registry.example": "pass"}})
    with pytest.raises(FledgeError) as caught:
        lookup_credentials("registry.example", env=env)
    assert "docker-credential-pass" in str(caught.value)
    assert "--creds" in str(caught.value)


def test_a_failing_helper_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper(tmp_path, "broken", "echo 'keychain locked' >&2\nexit 3\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env = docker_config(tmp_path, {"credsStore": "broken"})
    with pytest.raises(FledgeError, match=r"exit 3\): keychain locked"):
        lookup_credentials("registry.example", env=env)


def test_bearer_challenges_are_parsed() -> None:
    (challenge,) = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


def test_several_challenges_quotes_and_spacing() -> None:
    challenges = parse_challenges(
        'Basic realm="Registry \\"realm\\", with comma", BEARER Realm = https://t.example/token , '
        'error="insufficient_scope"'
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params == {"realm": 'Registry "realm", with comma'}
    assert challenges[1].params == {
        "realm": "https://t.example/token",
        "error": "insufficient_scope",
    }
    assert parse_challenges("") == []
    assert parse_challenges("Basic")[0].params == {}
