"""``manifest.toml``: the runtime-defaults template fledge turns into a plugin manifest.

The upstream layout (``[workload] entrypoint = "/bin/app"`` plus ``args``, a top-level
``[env]`` table, ``[network] mode`` with ``[[network.expose]]``, ``[actions.<name>]``,
``[cloud_init]``, ``[devices]``) converts into the same :class:`PluginManifest` as JSON
manifests; every JSON manifest field may be written in TOML too. A template may leave out the
boot artifact (fledge adds it after the build).
"""

from __future__ import annotations

import os

from ._codec import parse_toml_text, read_bytes, validate_model
from .manifest import PluginManifest


def parse_manifest_toml(text: str | bytes, *, source: str | None = None) -> PluginManifest:
    """Parse ``manifest.toml`` text into a PluginManifest (boot artifact optional)."""
    data = parse_toml_text(text, source=source)
    return validate_model(
        PluginManifest, data, source=source, context={"template": True}, table_word="table"
    )


def load_manifest_toml(path: str | os.PathLike[str]) -> PluginManifest:
    """Read and parse a ``manifest.toml`` file."""
    name = os.fspath(path)
    return parse_manifest_toml(read_bytes(name), source=name)
