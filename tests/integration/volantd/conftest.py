"""A real volantd (uvicorn, SQLite on disk) per test module, and artifacts to install."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def volantd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    with running_volantd(tmp_path_factory.mktemp("volantd") / "home") as daemon:
        yield daemon


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a temporary folder: (base URL, folder)."""
    root = tmp_path_factory.mktemp("served")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
