"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response

from api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    return {"ok": True, **runtime.status()}


@router.get(
    "/readyz",
    summary="Readiness: sessions recovered and the routing table loaded",
    responses={503: {"description": "Not ready yet (body says what is missing)."}},
)
async def readyz(runtime: RuntimeDep) -> Response:
    status = runtime.status()
    runtime.metrics.ready.set(1 if status["ready"] else 0)
    return Response(
        orjson.dumps(status),
        status_code=200 if status["ready"] else 503,
        media_type="application/json",
    )
