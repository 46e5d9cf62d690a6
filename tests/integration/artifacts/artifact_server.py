"""A real HTTP server on 127.0.0.1 that serves artifacts, and misbehaves on request.

Routes (every request path is recorded in `ArtifactServer.requests`):

    /files/<name>           the published file, with its Content-Length
    /redirect/<name>        302 to /files/<name>
    /redirect-loop          302 to itself
    /status/<code>          that status, with a short body
    /trickle/<n>            announces n bytes, sends one every 50 ms
    /lying-length/<name>    announces twice the file's size, sends the file, closes
    /huge-length            announces 10 GiB, sends 1 KiB, closes
    /stream/<n>             n bytes without Content-Length, ended by closing the connection
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HUGE = 10 * 2**30


class ArtifactServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder = folder
        self.requests: list[str] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def publish(self, name: str, data: bytes) -> str:
        """Serve `data` as /files/<name>; returns that URL."""
        (self.folder / name).write_bytes(data)
        return self.url(f"files/{name}")


class _Handler(BaseHTTPRequestHandler):
    server: ArtifactServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        route, _, rest = self.path.lstrip("/").partition("/")
        try:
            if route == "files":
                path = self.server.folder / rest
                if path.is_file():
                    self._send(200, path.read_bytes())
                else:
                    self._send(404, b"no such file\n")
            elif route == "redirect":
                self._redirect(f"/files/{rest}")
            elif route == "redirect-loop":
                self._redirect("/redirect-loop")
            elif route == "status":
                self._send(int(rest), b"no artifact here\n")
            elif route == "trickle":
                self._headers(200, int(rest))
                for _ in range(int(rest)):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif route == "lying-length":
                data = (self.server.folder / rest).read_bytes()
                self._headers(200, 2 * len(data))
                self.wfile.write(data)
            elif route == "huge-length":
                self._headers(200, HUGE)
                self.wfile.write(b"x" * 1024)
            elif route == "stream":
                self._headers(200, None)
                size = int(rest)
                for offset in range(0, size, 16384):
                    self.wfile.write(b"y" * min(16384, size - offset))
            else:
                self._send(404, b"unknown route\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client gave up, as the test wanted.
        self.close_connection = True

    def _headers(self, status: int, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status: int, body: bytes) -> None:
        self._headers(status, len(body))
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()
