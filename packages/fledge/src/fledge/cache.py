"""Where fledge keeps what it can reuse between builds (compiled init, downloads)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$FLEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/fledge``, else ``~/.cache/fledge``."""
    explicit = os.environ.get("FLEDGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "fledge"
