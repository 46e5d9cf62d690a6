"""``volantd serve``: the API under uvicorn, on TCP or a unix socket."""

from __future__ import annotations

import logging
import os
import stat

import uvicorn

from volantd.api import create_app
from volantd.api.middleware import RequestIdFilter
from volantd.errors import VolantError
from volantd.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str) -> None:
    """One line per record on stderr, each with the request id it belongs to."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # volantd.api logs each request


def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM."""
    configure_logging(settings.log_level)
    app = create_app(settings)
    options: dict[str, object] = {
        "log_config": None,
        "access_log": False,
        "timeout_keep_alive": 120,
        "timeout_graceful_shutdown": 15,
    }
    if settings.unix_socket is not None:
        _clear_stale_socket(settings.unix_socket)
        options["uds"] = str(settings.unix_socket)
    else:
        options["host"], options["port"] = settings.host_port
    server = uvicorn.Server(uvicorn.Config(app, **options))  # type: ignore[arg-type]
    logging.getLogger("volantd").info(
        "volantd listening on %s (home %s, API key %s)",
        settings.unix_socket or settings.listen,
        settings.home,
        "required" if settings.api_key else "off",
    )
    server.run()


def _clear_stale_socket(path: os.PathLike[str]) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise VolantError(f"{os.fspath(path)} exists and is not a socket; choose another path")
    os.unlink(path)
