"""volantd's configuration: command-line options over environment variables over defaults.

Environment variables keep upstream's names where upstream had one (``VOLANT_API_LISTEN``,
``VOLANT_API_KEY``, ``VOLANT_DB_PATH``); an empty variable counts as unset, as upstream.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from volantd.errors import VolantError
from volantd.paths import volant_home

DEFAULT_LISTEN = "127.0.0.1:7777"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(VolantError):
    """A setting has a value volantd cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything ``volantd serve`` needs to know."""

    home: Path = field(default_factory=volant_home)
    listen: str = DEFAULT_LISTEN
    """``HOST:PORT`` to listen on (ignored when ``unix_socket`` is set)."""
    unix_socket: Path | None = None
    db_path: Path | None = None
    """The SQLite file; default ``<home>/volant.db``."""
    api_key: str | None = None
    allow_remote_without_key: bool = False
    log_level: str = "info"
    stop_vms_on_exit: bool = False
    kernels_dir: Path | None = None
    """Where registered kernels live; default ``<home>/kernels``."""

    @classmethod
    def from_environment(cls, **overrides: object) -> Settings:
        """Defaults, then ``VOLANT_*`` variables, then non-None ``overrides`` (CLI options)."""
        env = {key: value for key, value in os.environ.items() if value != ""}
        settings = cls(
            home=Path(env["VOLANT_HOME"]).expanduser() if "VOLANT_HOME" in env else volant_home(),
            listen=env.get("VOLANT_API_LISTEN", DEFAULT_LISTEN),
            unix_socket=_optional_path(env.get("VOLANT_API_SOCKET")),
            db_path=_optional_path(env.get("VOLANT_DB_PATH")),
            api_key=env.get("VOLANT_API_KEY"),
            allow_remote_without_key=_flag(env, "VOLANT_ALLOW_REMOTE_WITHOUT_KEY"),
            log_level=env.get("VOLANT_LOG_LEVEL", "info").lower(),
            stop_vms_on_exit=_flag(env, "VOLANT_STOP_VMS_ON_EXIT"),
            kernels_dir=_optional_path(env.get("VOLANT_KERNELS_DIR")),
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(settings, **given).checked()  # type: ignore[arg-type]

    @property
    def database(self) -> Path:
        return self.db_path or self.home / "volant.db"

    @property
    def kernels(self) -> Path:
        return self.kernels_dir or self.home / "kernels"

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port (``[::1]:7777`` for IPv6)."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(
                f"listen address {self.listen!r} is not HOST:PORT (e.g. 127.0.0.1:7777); "
                "set --listen or VOLANT_API_LISTEN"
            )
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def is_loopback_only(self) -> bool:
        """Whether only this host can reach the API (loopback address or a unix socket)."""
        if self.unix_socket is not None:
            return True
        host = self.host_port[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def checked(self) -> Settings:
        """Return self after refusing unusable or unsafe combinations."""
        self.host_port  # noqa: B018 - validates the listen address
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"log level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        if self.api_key is not None and len(self.api_key) < 16:
            raise SettingsError("the API key (VOLANT_API_KEY) must be at least 16 characters")
        if not self.is_loopback_only and not self.api_key and not self.allow_remote_without_key:
            raise SettingsError(
                f"refusing to listen on {self.listen} without an API key: anyone who can reach "
                "it could run VMs. Set VOLANT_API_KEY, listen on a loopback address, or pass "
                "--allow-remote-without-key if the network is trusted"
            )
        return self


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _flag(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "").lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={env[name]!r}: use 1/true/yes/on or 0/false/no/off")
