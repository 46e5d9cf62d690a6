"""Where volantd keeps its state (VOLANT_HOME and the folders under it)."""

import os
from pathlib import Path


def volant_home() -> Path:
    """`VOLANT_HOME`, else /var/lib/volant as root, else `$XDG_DATA_HOME/volant`."""
    if env := os.environ.get("VOLANT_HOME"):
        return Path(env).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/volant")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "volant"


def kernels_dir(home: Path | None = None) -> Path:
    """Guest kernels: `VOLANT_KERNELS_DIR`, else `VOLANT_HOME/kernels`.

    As for the cache, the variable applies only to the host's own home (`home` not given), so
    `volantd kernels …` and `volantd serve` use the same store.
    """
    if home is None and (env := os.environ.get("VOLANT_KERNELS_DIR")):
        return Path(env).expanduser().resolve()
    return (home or volant_home()) / "kernels"


def run_dir(home: Path | None = None) -> Path:
    return (home or volant_home()) / "run"


def cache_dir(home: Path | None = None) -> Path:
    """Downloads and probe results: `VOLANT_CACHE_DIR`, else `VOLANT_HOME/cache`.

    The environment variable only applies to the host's own home (`home` not given), so tests
    can give every run its own VOLANT_HOME and still share one download cache.
    """
    if home is None and (env := os.environ.get("VOLANT_CACHE_DIR")):
        return Path(env).expanduser().resolve()
    return (home or volant_home()) / "cache"
