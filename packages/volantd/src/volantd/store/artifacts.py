"""Metadata of the files a plugin version needs (initramfs, rootfs, disks) in the cache."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from volantd.store.errors import NotFoundError
from volantd.store.schema import artifacts, plugins, utc_now
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class ArtifactRecord:
    """One artifact of one plugin version, as cached under `cache_path`.

    `id` and `created_at` are set by the store (`id` is 0 before the record is stored).
    """

    plugin_name: str
    version: str
    name: str
    kind: str
    sha256: str
    size_bytes: int
    cache_path: Path
    source_url: str | None = None
    format: str | None = None
    id: int = 0
    created_at: datetime = field(default_factory=utc_now)


class ArtifactRepository:
    """Artifacts, keyed by (plugin, version, name)."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def put(self, record: ArtifactRecord) -> ArtifactRecord:
        """Record an artifact, replacing the one with the same plugin, version and name."""
        with self._tx.write() as conn:
            return write_artifact(conn, record)

    def get(self, plugin: str, version: str, name: str) -> ArtifactRecord:
        """One artifact; `NotFoundError` if it was never recorded."""
        with self._tx.read() as conn:
            return _get(conn, plugin, version, name)

    def list(self, plugin: str, version: str | None = None) -> builtins.list[ArtifactRecord]:
        """A plugin's artifacts (of one version if given): newest version first, then by name.

        Versions compare naturally, so 1.10 is newer than 1.9.
        """
        query = sa.select(artifacts).where(artifacts.c.plugin_name == plugin)
        if version is not None:
            query = query.where(artifacts.c.version == version)
        with self._tx.read() as conn:
            records = [_record(row) for row in conn.execute(query)]
        records.sort(key=lambda record: record.name)
        records.sort(key=lambda record: _version_key(record.version), reverse=True)
        return records

    def delete(self, plugin: str, version: str | None = None) -> int:
        """Forget a plugin's artifacts (of one version if given); returns how many."""
        condition = artifacts.c.plugin_name == plugin
        if version is not None:
            condition &= artifacts.c.version == version
        with self._tx.write() as conn:
            return conn.execute(artifacts.delete().where(condition)).rowcount


def write_artifact(conn: Connection, record: ArtifactRecord) -> ArtifactRecord:
    """`ArtifactRepository.put` inside the caller's write transaction."""
    key = (record.plugin_name, record.version, record.name)
    if conn.scalar(sa.select(plugins.c.name).where(plugins.c.name == record.plugin_name)) is None:
        raise NotFoundError(f'plugin "{record.plugin_name}" not found')
    values = {
        "kind": record.kind,
        "source_url": record.source_url,
        "sha256": record.sha256,
        "format": record.format,
        "size_bytes": record.size_bytes,
        "cache_path": str(record.cache_path),
        "created_at": utc_now(),
    }
    if conn.execute(artifacts.update().where(_matches(*key)).values(values)).rowcount == 0:
        conn.execute(
            artifacts.insert().values(
                plugin_name=record.plugin_name, version=record.version, name=record.name, **values
            )
        )
    return _get(conn, *key)


def _matches(plugin: str, version: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        artifacts.c.plugin_name == plugin, artifacts.c.version == version, artifacts.c.name == name
    )


def _record(row: Row[Any]) -> ArtifactRecord:
    values = dict(row._mapping)
    values["cache_path"] = Path(values["cache_path"])
    return ArtifactRecord(**values)


def _get(conn: Connection, plugin: str, version: str, name: str) -> ArtifactRecord:
    row = conn.execute(sa.select(artifacts).where(_matches(plugin, version, name))).first()
    if row is None:
        raise NotFoundError(f'artifact "{name}" of plugin "{plugin}" version "{version}" not found')
    return _record(row)


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    # Digit runs compare as numbers, so "1.10" sorts after "1.9".
    return tuple(
        (1, int(part), "") if part.isdigit() else (0, 0, part)
        for part in re.findall(r"\d+|\D+", version)
    )
