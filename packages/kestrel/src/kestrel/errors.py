"""The one error hierarchy of the guest agent."""

from __future__ import annotations


class KestrelError(Exception):
    """Base of every error kestrel reports; the message says what was wrong and where."""


class ConfigError(KestrelError):
    """``vm.json`` is missing, unreadable or does not match contract 1."""


class UserLookupError(KestrelError):
    """A workload or exec ``user`` names a user or group that the guest does not have."""


class SpawnError(KestrelError):
    """A program could not be started (missing file, bad working directory, bad user)."""
