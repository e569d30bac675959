"""Dependency aliases of the API: the runtime, and the two bearer-token checks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.decide.service import DecideService
from api.runtime import Runtime
from infra.settings import Settings

_bearer = HTTPBearer(auto_error=False)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_service(runtime: RuntimeDep) -> DecideService:
    if runtime.service is None:  # only before the lifespan ran
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "service starting")
    return runtime.service


ServiceDep = Annotated[DecideService, Depends(get_service)]

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check(credentials: HTTPAuthorizationCredentials | None, secret: str, realm: str) -> None:
    # compare_digest on bytes: constant time in the secret's length, whatever is presented.
    presented = credentials.credentials.encode() if credentials is not None else b""
    if credentials is None or not hmac.compare_digest(presented, secret.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
        )


async def require_internal(credentials: Credentials, settings: SettingsDep) -> None:
    """Gateways: `Authorization: Bearer <internal secret>`."""
    _check(credentials, settings.internal_secret.get_secret_value(), "decide")


async def require_admin(credentials: Credentials, settings: SettingsDep) -> None:
    """Admins: `Authorization: Bearer <admin token>`."""
    _check(credentials, settings.admin_token.get_secret_value(), "admin")


InternalAuth = Depends(require_internal)
AdminAuth = Depends(require_admin)
