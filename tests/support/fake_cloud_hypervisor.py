"""A stand-in for the `cloud-hypervisor` binary: its REST API on a unix socket, no guest.

Run as ``fake_cloud_hypervisor.py --api-socket path=api.sock`` (what the driver runs), it
serves ``vmm.ping``, ``vm.create``, ``vm.boot``, ``vm.info``, ``vm.power-button`` and
``vmm.shutdown`` and appends every request (method, endpoint, JSON body) to ``calls.jsonl``
in its working directory. ``vm.create`` with a ``Socket`` serial opens that socket as CH
does; ``vm.boot`` prints a few lines on it, and what a console client types comes back as
``echo: ...``. Run with ``--kernel`` (the driver's KVM probe) it prints a kernel banner.

Environment: ``FAKE_CH_VERSION`` (default 50.1.0), ``FAKE_CH_REFUSE`` (an endpoint to answer
with HTTP 400), ``FAKE_CH_POWER_OFF=1`` (the power button ends the VMM, as a guest that
powers off would), ``FAKE_CH_PROBE=fail`` (the probe exits without a banner).
Only the standard library: it runs under any Python.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

BOOT_LINES = b"Linux version 6.1.0-fake (fake cloud-hypervisor)\r\nfake guest booted\r\n"


class Fake:
    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.state = "Created"
        self.serial: socket.socket | None = None
        self.client: socket.socket | None = None
        self.connected = threading.Event()
        self.lock = threading.Lock()

    def record(self, method: str, endpoint: str, body: Any) -> None:
        with open("calls.jsonl", "a") as calls:
            calls.write(json.dumps({"method": method, "endpoint": endpoint, "body": body}) + "\n")

    def open_serial(self, path: str) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        self.serial = listener
        threading.Thread(target=self.serve_serial, daemon=True).start()

    def serve_serial(self) -> None:
        assert self.serial is not None
        while True:
            client, _ = self.serial.accept()
            with self.lock:
                if self.client is not None:
                    self.client.close()
                self.client = client
            self.connected.set()
            while data := client.recv(4096):
                self.say(b"echo: " + data)

    def say(self, data: bytes) -> None:
        with self.lock:
            if self.client is not None:
                self.client.sendall(data)


FAKE = Fake()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"fake-ch: {format % args}\n")

    def address_string(self) -> str:
        return "unix"

    def do_GET(self) -> None:
        self.handle_request("GET")

    def do_PUT(self) -> None:
        self.handle_request("PUT")

    def handle_request(self, method: str) -> None:
        endpoint = self.path.removeprefix("/api/v1/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        FAKE.record(method, endpoint, body)
        if os.environ.get("FAKE_CH_REFUSE") == endpoint:
            return self.reply(400, b"Error from the fake: refused on purpose")
        if (method, endpoint) == ("GET", "vmm.ping"):
            version = os.environ.get("FAKE_CH_VERSION", "50.1.0")
            return self.reply_json({"version": version, "build_version": f"v{version}"})
        if (method, endpoint) == ("PUT", "vm.create"):
            if FAKE.config is not None:
                return self.reply(500, b"VmAlreadyCreated")
            FAKE.config = body
            serial = (body or {}).get("serial") or {}
            if serial.get("mode") == "Socket":
                FAKE.open_serial(serial["socket"])
            return self.reply(204)
        if (method, endpoint) == ("PUT", "vm.boot"):
            if FAKE.config is None:
                return self.reply(404, b"VmNotCreated")
            FAKE.state = "Running"
            FAKE.say(BOOT_LINES)
            return self.reply(204)
        if (method, endpoint) == ("GET", "vm.info"):
            if FAKE.config is None:
                return self.reply(404, b"VmNotCreated")
            return self.reply_json({"config": FAKE.config, "state": FAKE.state})
        if (method, endpoint) == ("PUT", "vm.power-button"):
            FAKE.say(b"power button pressed\r\n")
            self.reply(204)
            if os.environ.get("FAKE_CH_POWER_OFF") == "1":
                exit_soon(0)
            return None
        if (method, endpoint) == ("PUT", "vmm.shutdown"):
            self.reply(204)
            exit_soon(0)
            return None
        return self.reply(404, b"unknown endpoint")

    def reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def reply_json(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


def exit_soon(code: int) -> None:
    def bye() -> None:
        time.sleep(0.05)
        os._exit(code)

    threading.Thread(target=bye, daemon=True).start()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main(argv: list[str]) -> int:
    if "--kernel" in argv:  # the driver's KVM probe
        if os.environ.get("FAKE_CH_PROBE") == "fail":
            print("Error booting VM: KVM hangs here (fake)", flush=True)
            return 1
        sys.stdout.write(BOOT_LINES.decode())
        sys.stdout.flush()
        time.sleep(60)
        return 0
    path = dict(part.split("=", 1) for part in argv[argv.index("--api-socket") + 1].split(","))
    api = Path(path["path"])
    api.unlink(missing_ok=True)
    Server(str(api), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
