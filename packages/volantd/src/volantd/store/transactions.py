"""Read and write transactions over one engine, for the repositories.

The repositories only say whether they mean to write; how a write transaction takes its
lock is the backend's business (see `volantd.store.sqlite`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

WRITE_INTENT = "volant_write_intent"
"""Execution option set on connections that are going to write."""


class Transactions:
    """Hands out connections, each inside one transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE_INTENT: True})

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction that only reads: every query in it sees the same snapshot."""
        with self._engine.connect() as connection:
            yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that writes: committed on success, rolled back on any exception.

        Write transactions are serialised from their start, so a check made at the top of
        one (name free, port free) still holds when it writes.
        """
        with self._writer.begin() as connection:
            yield connection
