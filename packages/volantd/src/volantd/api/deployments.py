"""``/api/v1/deployments``: groups of identical VMs kept at a desired count (upstream's paths).

A deployment is ``{name, desired_replicas, ready_replicas, replicas: [{name, status, ready}],
config, created_at, updated_at, last_error}``. Creating and scaling up answer at once while
the replicas boot in the background: poll ``GET`` until ``ready_replicas`` reaches
``desired_replicas``. A replica is ready when it runs and its workload is healthy.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from volantd.api.errors import APIError, error_response
from volantd.deployments import (
    DeploymentController,
    DeploymentError,
    DeploymentView,
    InvalidDeploymentError,
)

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])


class CreateDeployment(BaseModel):
    """Upstream's create request; ``config`` is a VM config document (``plugin`` at least)."""

    name: str
    replicas: int = Field(1, ge=0, strict=True)
    config: dict[str, Any]


class ScaleDeployment(BaseModel):
    replicas: int = Field(ge=0, strict=True)


def controller(request: Request) -> DeploymentController:
    deployments: DeploymentController = request.app.state.services.deployments
    return deployments


def deployment_view(view: DeploymentView) -> dict[str, Any]:
    return {
        "name": view.name,
        "desired_replicas": view.desired_replicas,
        "ready_replicas": view.ready_replicas,
        "replicas": [
            {"name": replica.name, "status": replica.status, "ready": replica.ready}
            for replica in view.replicas
        ],
        "config": view.config,
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "last_error": view.last_error,
    }


def unprocessable(error: InvalidDeploymentError) -> JSONResponse:
    issues = [{"path": issue.path, "message": issue.message} for issue in error.issues]
    return error_response(422, str(error), issues=issues)


@router.get("")
async def list_deployments(request: Request) -> list[dict[str, Any]]:
    """Every deployment, by name."""
    return [deployment_view(view) for view in await controller(request).list()]


@router.post("", status_code=201)
async def create_deployment(request: Request, body: CreateDeployment) -> Any:
    """Create a deployment and start its replicas (404 unknown plugin, 409 name taken)."""
    try:
        view = await controller(request).create(body.name, body.replicas, body.config)
    except InvalidDeploymentError as error:
        return unprocessable(error)
    return JSONResponse(deployment_view(view), status_code=201)


@router.get("/{name}")
async def get_deployment(request: Request, name: str) -> dict[str, Any]:
    """One deployment with its replicas."""
    return deployment_view(await controller(request).get(name))


@router.patch("/{name}")
async def scale_deployment(request: Request, name: str, body: ScaleDeployment) -> Any:
    """Scale to ``replicas``: scale-down removes the highest indices before answering."""
    try:
        view = await controller(request).scale(name, body.replicas)
    except InvalidDeploymentError as error:
        return unprocessable(error)
    return deployment_view(view)


@router.delete("/{name}", status_code=204)
async def delete_deployment(request: Request, name: str) -> Response:
    """Stop and delete every replica, then the deployment."""
    try:
        await controller(request).delete(name)
    except DeploymentError as error:  # a replica would not go: volantd's fault, not the caller's
        raise APIError(str(error), 500) from None
    return Response(status_code=204)
