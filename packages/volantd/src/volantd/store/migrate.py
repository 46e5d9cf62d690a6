"""Schema migrations, run from code with the Alembic environment inside this package.

No alembic.ini exists: `alembic_config()` builds the configuration. To write a new
revision after changing `schema.py`, autogenerate it against a database at head::

    from alembic import command
    from volantd.store.migrate import alembic_config
    command.revision(alembic_config(url="sqlite:////tmp/head.db"), "what changed",
                     autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from volantd.store.errors import StoreError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for this package's migrations, on `connection` or `url`."""
    config = Config()
    # Config options go through configparser interpolation, which treats % specially.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, database: str) -> None:
    """Bring the database to the head revision, inside the caller's transaction.

    Refuses a database written by a newer volantd (a revision this code does not know) and
    a database that holds tables but was never migrated (not a volantd store). `database`
    names it in error messages.
    """
    config = alembic_config(connection)
    script = ScriptDirectory.from_config(config)
    current = current_revision(connection)
    if current is None:
        foreign = sorted(sa.inspect(connection).get_table_names())
        if foreign:
            raise StoreError(
                f"{database} is not a volantd database (it has tables {', '.join(foreign)} "
                "but no schema revision); point volantd at another VOLANT_HOME"
            )
    elif current not in {revision.revision for revision in script.walk_revisions()}:
        raise StoreError(
            f"{database} is at schema revision {current!r}, which this volantd does not "
            f"know (it knows up to {script.get_current_head()!r}): it was written by a newer "
            "volantd; upgrade volantd, or point it at another VOLANT_HOME"
        )
    command.upgrade(config, "head")
