"""The guest agent (kestrel zipapp) for the default init mode, from ``[agent]``.

- ``bundled`` (default) and upstream's ``release``: the zipapp built from the installed
  ``kestrel`` package (``kestrel.zipapp.build_zipapp``), byte-compiled for the guest Python.
- ``local``: a file, relative to the config's folder (upstream used the working directory).
- ``http``: a download, verified when ``checksum`` is given.
"""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pluginspec import AgentConfig

from .download import download
from .errors import FledgeError
from .sources import read_host_file

AGENT_PATH = "/opt/volant/kestrel.pyz"


@dataclass(frozen=True)
class Agent:
    """The agent's bytes and a one-line description of where they came from."""

    data: bytes
    origin: str
    notes: tuple[str, ...] = ()


def bundled_agent(python: str) -> bytes:
    """Build the kestrel zipapp from this installation's kestrel package."""
    try:
        zipapp = importlib.import_module("kestrel.zipapp")
    except ImportError as exc:
        raise FledgeError(
            f"the bundled agent needs kestrel.zipapp, which cannot be imported ({exc}); "
            "install fledge together with the kestrel package of the same Volant checkout, or "
            "use [agent] source_strategy = 'local' or 'http'"
        ) from None
    failure: type[Exception] = getattr(zipapp, "ZipappError", OSError)
    with tempfile.TemporaryDirectory(prefix="fledge-agent-") as scratch:
        try:
            built = zipapp.build_zipapp(Path(scratch) / "kestrel.pyz", python=python)
            return Path(built).read_bytes()
        except (failure, OSError) as exc:
            raise FledgeError(f"building the bundled kestrel zipapp failed: {exc}") from None


def fetch_agent(agent: AgentConfig, base_dir: Path, cache_dir: Path, *, python: str) -> Agent:
    """The agent ``agent`` describes (``python``: the guest interpreter it is compiled for)."""
    strategy = agent.source_strategy
    if strategy in ("bundled", "release"):
        notes: tuple[str, ...] = ()
        if strategy == "release" and agent.version not in (None, "latest"):
            notes = (
                f"agent.version {agent.version!r} is ignored: source_strategy 'release' means "
                "the kestrel bundled with this fledge",
            )
        return Agent(bundled_agent(python), "bundled kestrel", notes)
    if strategy == "local":
        assert agent.path is not None  # pluginspec requires it for 'local'
        path, data = read_host_file(agent.path, base_dir, "agent.path")
        return Agent(data, f"local {path}")
    assert agent.url is not None  # pluginspec requires it for 'http'
    fetched = download(agent.url, cache_dir, sha256=agent.checksum, what="agent.url")
    notes = () if agent.checksum else ("agent downloaded without agent.checksum: pin it",)
    return Agent(fetched.read_bytes(), f"download {agent.url}", notes)
