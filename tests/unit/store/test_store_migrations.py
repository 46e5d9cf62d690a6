"""Opening the store: migrations, the schema they build, and databases it must refuse."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from volantd.store import Database, PluginRecord, StoreError, open_database
from volantd.store.migrate import MIGRATIONS_DIR, alembic_config, head_revision
from volantd.store.schema import metadata
from volantd.store.sqlite import create_sqlite_engine

TABLES = {
    "plugins",
    "artifacts",
    "vms",
    "vm_configs",
    "deployments",
    "port_leases",
    "ip_leases",
    "device_claims",
    "events",
}


def revision_of(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def describe(engine: sa.Engine) -> dict[str, Any]:
    """Everything reflection tells about every table, in a comparable form."""
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        ddl: dict[str, str] = dict(
            conn.exec_driver_sql("SELECT name, sql FROM sqlite_master").all()
        )
    return {
        table: {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"])
                for column in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table),
            "foreign_keys": sorted(
                (fk["name"], fk["constrained_columns"], fk["referred_table"], fk["options"])
                for fk in inspector.get_foreign_keys(table)
            ),
            "unique": sorted(
                (uq["name"], uq["column_names"]) for uq in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (ix["name"], ix["column_names"], ix["unique"])
                for ix in inspector.get_indexes(table)
            ),
            "checks": sorted(
                (ck["name"], ck["sqltext"]) for ck in inspector.get_check_constraints(table)
            ),
            "autoincrement": "AUTOINCREMENT" in ddl[table],
        }
        for table in TABLES
    }


def test_open_creates_the_folder_and_every_table_at_the_newest_revision(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "home" / "volant.db"
    with open_database(path) as db:
        assert set(sa.inspect(db.engine).get_table_names()) == TABLES | {"alembic_version"}
    assert revision_of(path) == head_revision()


def test_migrated_schema_matches_the_metadata(db: Database, tmp_path: Path) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    # compare_metadata skips CHECK constraints, ON DELETE rules and AUTOINCREMENT: compare
    # the migrated database with one made straight from the metadata.
    reference = create_sqlite_engine(tmp_path / "reference.db")
    metadata.create_all(reference)
    try:
        assert describe(db.engine) == describe(reference)
    finally:
        reference.dispose()


def test_migrations_go_down_to_nothing_and_up_again(db: Database) -> None:
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert sa.inspect(db.engine).get_table_names() == ["alembic_version"]
    with db.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert set(sa.inspect(db.engine).get_table_names()) == TABLES | {"alembic_version"}


def test_migrations_folder_holds_what_alembic_needs_at_runtime() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("*.py")) == [
        "0001_initial.py",
        "0002_device_claims.py",
    ]


def test_reopening_keeps_the_data_and_changes_nothing(db_path: Path) -> None:
    with open_database(db_path) as db:
        db.plugins.add(PluginRecord(name="caddy", version="1", runtime="caddy", manifest={}))
        schema_before = describe(db.engine)
    with open_database(db_path) as db:
        assert [plugin.name for plugin in db.plugins.list()] == ["caddy"]
        assert describe(db.engine) == schema_before
    assert revision_of(db_path) == head_revision()


def test_a_database_from_a_newer_volantd_is_refused_and_left_alone(db_path: Path) -> None:
    open_database(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_future'")
    with pytest.raises(StoreError, match=r"revision '0099_future'.*newer volantd") as caught:
        open_database(db_path)
    assert str(db_path) in str(caught.value)
    assert revision_of(db_path) == "0099_future"


def test_a_database_of_another_program_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match=r"not a volantd database .*customers"):
        open_database(db_path)


def test_a_file_that_is_no_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not SQLite at all\n" * 100)
    with pytest.raises(StoreError, match=r"cannot open the volantd database .*not a database"):
        open_database(db_path)


def test_every_connection_uses_wal_foreign_keys_and_a_busy_timeout(db: Database) -> None:
    connections = [db.engine.connect() for _ in range(3)]  # three distinct pooled connections
    try:
        for conn in connections:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
            assert pragmas == {
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": 5000,
                "synchronous": 1,  # NORMAL
            }
    finally:
        for conn in connections:
            conn.close()
