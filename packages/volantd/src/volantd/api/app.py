"""The FastAPI application: routes, error format, request ids, the API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from volantd import __version__
from volantd.api import deployments, events, guest, mcp, plugins, system, vfio, vms
from volantd.api.errors import install_error_handlers
from volantd.api.middleware import ApiKeyCheck, RequestContext
from volantd.services import Services
from volantd.settings import Settings


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API for ``settings``; ``services`` are opened at start-up unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = services or Services.open(settings)
        app.state.services = opened
        app.state.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=None))
        app.state.console_sessions = set()  # VM names with an attached console (one each)
        await opened.start()
        try:
            yield
        finally:
            await app.state.http.aclose()
            if services is None:
                await opened.close()
            if settings.unix_socket is not None:  # uvicorn leaves its socket file behind
                settings.unix_socket.unlink(missing_ok=True)

    app = FastAPI(
        title="volantd",
        version=__version__,
        description="The Volant control plane: plugins, microVMs, deployments.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(plugins.router)
    app.include_router(vms.router)
    app.include_router(deployments.router)
    app.include_router(events.router)
    app.include_router(guest.router)
    app.include_router(mcp.router)
    app.include_router(vfio.router)
    if settings.api_key:
        app.add_middleware(ApiKeyCheck, api_key=settings.api_key)
    app.add_middleware(RequestContext)  # outermost: every response carries its request id
    return app
