"""Resolving workload users from the image's /etc/passwd and /etc/group."""

from __future__ import annotations

from pathlib import Path

import pytest

from kestrel.errors import UserLookupError
from kestrel.users import Identity, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
app:x:1000:1000:App:/home/app:/bin/sh
svc:x:999:50::/var/lib/svc:/sbin/nologin
broken line
"""
GROUP = """\
root:x:0:
staff:x:50:app
app:x:1000:
docker:x:998:svc,app
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "passwd").write_text(PASSWD)
    (tmp_path / "group").write_text(GROUP)
    return {"passwd": str(tmp_path / "passwd"), "group": str(tmp_path / "group")}


def test_user_name(files: dict[str, str]) -> None:
    assert resolve_user("app", **files) == Identity(1000, 1000, (50, 998), "/home/app", "app")


def test_uid_known_to_passwd(files: dict[str, str]) -> None:
    assert resolve_user("999", **files) == Identity(999, 50, (998,), "/var/lib/svc", "svc")


def test_unknown_uid_runs_with_gid_zero(files: dict[str, str]) -> None:
    assert resolve_user("4242", **files) == Identity(4242, 0, (), "/", None)


def test_user_and_group_names(files: dict[str, str]) -> None:
    identity = resolve_user("app:docker", **files)
    assert (identity.uid, identity.gid, identity.groups) == (1000, 998, (50,))


def test_numeric_uid_and_gid(files: dict[str, str]) -> None:
    assert resolve_user("1234:5678", **files) == Identity(1234, 5678, (), "/", None)


def test_root(files: dict[str, str]) -> None:
    assert resolve_user("root", **files) == Identity(0, 0, (), "/root", "root")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nobody", "no user 'nobody'"),
        ("app:wheel", "no group 'wheel'"),
        ("app:", "expected 'user'"),
        (":staff", "expected 'user'"),
    ],
)
def test_unknown_names_are_errors(files: dict[str, str], spec: str, message: str) -> None:
    with pytest.raises(UserLookupError, match=message):
        resolve_user(spec, **files)


def test_images_without_passwd_accept_numeric_ids(tmp_path: Path) -> None:
    missing = {"passwd": str(tmp_path / "none"), "group": str(tmp_path / "none")}
    assert resolve_user("1000:1000", **missing) == Identity(1000, 1000, (), "/", None)
    with pytest.raises(UserLookupError):
        resolve_user("app", **missing)
