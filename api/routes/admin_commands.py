"""GET /admin/commands/{id}: pending, accepted, or rejected with the reason."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from api.deps import AdminAuth, RuntimeDep
from api.routes._admin import NOT_AUTHENTICATED, UNAVAILABLE, read

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAuth])


class CommandStatus(BaseModel):
    commandId: str
    status: Literal["pending", "accepted", "rejected"]
    commandType: str | None
    reason: str | None = None
    """Why it was rejected (names the field where one is at fault)."""
    decidedAt: str | None = None


@router.get(
    "/commands/{command_id}",
    response_model=CommandStatus,
    responses={404: {"description": "Unknown command id."}, **NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="The outcome of a posted command",
)
async def command_status(command_id: str, runtime: RuntimeDep) -> CommandStatus:
    outcome = await read(runtime.read_model.command_outcome(command_id))
    if outcome is not None:
        return CommandStatus(
            commandId=command_id,
            status="rejected" if outcome.outcome == "rejected" else "accepted",
            commandType=outcome.command_type,
            reason=outcome.reason,
            decidedAt=outcome.occurred_at,
        )
    if command_id in runtime.posted:
        return CommandStatus(
            commandId=command_id, status="pending", commandType=runtime.posted[command_id]
        )
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown command {command_id!r}")
