"""Resolving a workload ``user`` (``name``, ``uid``, ``name:group``, ``uid:gid``).

Reads ``/etc/passwd`` and ``/etc/group`` directly: guest images may have no NSS modules and
the agent's interpreter may use a different libc than the image. Semantics follow the OCI
image ``User`` field: a numeric uid unknown to ``/etc/passwd`` runs with gid 0.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import UserLookupError


class Identity(NamedTuple):
    """Who a program runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    """Supplementary groups (from ``/etc/group`` memberships)."""
    home: str
    name: str | None


class _Passwd(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


def resolve_user(spec: str, *, passwd: str = "/etc/passwd", group: str = "/etc/group") -> Identity:
    """Resolve ``spec`` against the given passwd and group files."""
    user_part, _, group_part = spec.partition(":")
    if not user_part or (":" in spec and not group_part):
        raise UserLookupError(f"user {spec!r}: expected 'user', 'uid', 'user:group' or 'uid:gid'")
    accounts = _read_passwd(passwd)
    entry = _find_account(accounts, user_part)
    if entry is None:
        if not user_part.isdigit():
            raise UserLookupError(f"user {spec!r}: no user {user_part!r} in {passwd}")
        entry = _Passwd(name="", uid=int(user_part), gid=0, home="/")
    groups = _read_group(group)
    gid = entry.gid
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            found = [g for g in groups if g[0] == group_part]
            if not found:
                raise UserLookupError(f"user {spec!r}: no group {group_part!r} in {group}")
            gid = found[0][1]
    supplementary = tuple(
        sorted({g[1] for g in groups if entry.name and entry.name in g[2]} - {gid})
    )
    return Identity(
        uid=entry.uid,
        gid=gid,
        groups=supplementary,
        home=entry.home or "/",
        name=entry.name or None,
    )


def _find_account(accounts: list[_Passwd], user: str) -> _Passwd | None:
    if user.isdigit():
        by_uid = [a for a in accounts if a.uid == int(user)]
        return by_uid[0] if by_uid else None
    by_name = [a for a in accounts if a.name == user]
    return by_name[0] if by_name else None


def _lines(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise UserLookupError(f"cannot read {path}: {error.strerror or error}") from None
    return [
        line.split(":")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _read_passwd(path: str) -> list[_Passwd]:
    accounts = []
    for fields in _lines(path):
        if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit():
            accounts.append(_Passwd(fields[0], int(fields[2]), int(fields[3]), fields[5]))
    return accounts


def _read_group(path: str) -> list[tuple[str, int, set[str]]]:
    groups = []
    for fields in _lines(path):
        if len(fields) >= 4 and fields[2].isdigit():
            members = {m.strip() for m in fields[3].split(",") if m.strip()}
            groups.append((fields[0], int(fields[2]), members))
    return groups
