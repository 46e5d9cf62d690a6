"""Engine setup for SQLite, the embedded backend: the only module that knows it is SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from volantd.store.transactions import WRITE_INTENT

PRAGMAS = (
    "journal_mode=WAL",
    "foreign_keys=ON",
    "busy_timeout=5000",
    "synchronous=NORMAL",
)


def create_sqlite_engine(path: Path) -> Engine:
    """An engine on the SQLite file `path` that is safe to share between threads.

    Every pooled connection gets `PRAGMAS`. SQLAlchemy, not the sqlite3 module, emits
    BEGIN: plain BEGIN for reads, BEGIN IMMEDIATE for write transactions, which takes the
    write lock up front (waiting up to busy_timeout) instead of failing when a read
    transaction later tries to upgrade itself to a writer.
    """
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(path)))
    sa.event.listen(engine, "connect", _configure_connection)
    sa.event.listen(engine, "begin", _begin)
    return engine


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN from sqlite3; see _begin
    cursor = dbapi_connection.cursor()
    try:
        for pragma in PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _begin(connection: Connection) -> None:
    writing = connection.get_execution_options().get(WRITE_INTENT, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
