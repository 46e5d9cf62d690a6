"""Errors raised by the persistent store."""

from volantd.errors import VolantError


class StoreError(VolantError):
    """Base of every store error: the database cannot be opened, or a write was refused."""


class NotFoundError(StoreError):
    """The named thing (vm, plugin, deployment, artifact) is not in the store."""


class ConflictError(StoreError):
    """The write clashes with what is stored: a duplicate name, a resource still in use,
    or a pool with nothing left to lease."""
