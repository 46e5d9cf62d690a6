"""A real `volantd serve` under uvicorn, in its own VOLANT_HOME, spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.guest import free_port, wait_for

VOLANTD = Path(sys.executable).parent / "volantd"


@dataclass
class Volantd:
    """A running daemon: its base URL, home, log file and process."""

    url: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes]
    api_key: str | None = None
    socket: Path | None = None
    """The unix socket it listens on instead of `url` (a daemon in a network namespace)."""

    def client(self, *, api_key: str | None = None, timeout: float = 60) -> httpx.Client:
        key = api_key if api_key is not None else self.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        transport = httpx.HTTPTransport(uds=str(self.socket)) if self.socket else None
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Stop the daemon; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def volantd_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLANT_")}
    # the reference kernel and downloads are shared with the host's store
    if "VOLANT_CACHE_DIR" in os.environ:
        env["VOLANT_CACHE_DIR"] = os.environ["VOLANT_CACHE_DIR"]
    env["VOLANT_HOME"] = str(home)
    env.update(extra or {})
    return env


@contextmanager
def running_volantd(
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
    netns: str | None = None,
) -> Iterator[Volantd]:
    """Start `volantd serve --listen 127.0.0.1:<free port>` and wait until /healthz answers.

    With `netns`, volantd runs inside that network namespace and listens on a unix socket in
    its home (the test's loopback cannot reach the namespace's).
    """
    home.mkdir(parents=True, exist_ok=True)
    log = home / "volantd.log"
    extra = dict(env or {})
    if api_key:
        extra["VOLANT_API_KEY"] = api_key
    if netns is None:
        port = free_port()
        url, socket, listen = f"http://127.0.0.1:{port}", None, ["--listen", f"127.0.0.1:{port}"]
        prefix: list[str] = []
    else:
        socket = home / "volantd.sock"
        url, listen = "http://volantd", ["--socket", str(socket)]
        prefix = ["ip", "netns", "exec", netns]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*prefix, str(VOLANTD), "serve", *listen, *args],
            env=volantd_env(home, extra),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    daemon = Volantd(url, home, log, process, api_key, socket)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"volantd exited with {process.returncode}:\n{daemon.logs()}")
        try:
            with daemon.client(timeout=2) as client:
                return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 30, "volantd to answer /healthz")
        yield daemon
    finally:
        daemon.stop()
