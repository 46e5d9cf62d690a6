"""The long-lived parts of a running volantd, built once and shared by the API routes."""

from __future__ import annotations

from dataclasses import dataclass

from volantd.artifacts import ArtifactCache
from volantd.paths import cache_dir
from volantd.registry import PluginRegistry
from volantd.settings import Settings
from volantd.store import Database, open_database


@dataclass
class Services:
    settings: Settings
    db: Database
    cache: ArtifactCache
    plugins: PluginRegistry

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the store (migrating it) and the artifact cache under ``settings.home``."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = open_database(settings.database)
        cache = ArtifactCache(cache_dir(settings.home))
        return cls(settings, db, cache, PluginRegistry(db, cache))

    def close(self) -> None:
        self.db.close()
