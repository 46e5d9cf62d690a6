"""The HTTP server fixture for the artifact cache tests (see artifact_server.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from artifact_server import ArtifactServer


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactServer]:
    server = ArtifactServer(tmp_path_factory.mktemp("served"))
    thread = threading.Thread(target=server.serve_forever, name="artifact-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(running_server: ArtifactServer) -> ArtifactServer:
    """The module's server with an empty request log."""
    running_server.requests.clear()
    return running_server
