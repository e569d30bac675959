"""Shared helpers of the admin routers: posting a command, reading under a 503 guard."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import HTTPException, status
from pydantic import BaseModel, Field

from api.runtime import Runtime
from contracts.envelope import CommandBase

log = logging.getLogger("provenroute.admin")
T = TypeVar("T")


class CommandPosted(BaseModel):
    """The command was put on the command topic; its outcome is at /admin/commands/{id}."""

    commandId: str
    commandType: str
    runId: str | None = Field(default=None, description="StartRun only: the run it creates.")
    statusUrl: str


async def post(runtime: Runtime, command: CommandBase, run_id: str | None = None) -> CommandPosted:
    try:
        await runtime.post_command(command)
    except Exception as e:
        log.warning("posting %s failed: %s", command.type, e)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the command topic is unavailable: {e!s}"[:300]
        ) from None
    return CommandPosted(
        commandId=command.command_id,
        commandType=command.type,
        runId=run_id,
        statusUrl=f"/admin/commands/{command.command_id}",
    )


async def read(awaitable: Awaitable[T]) -> T:
    """A projection read; a database failure is a 503, not a 500."""
    try:
        return await awaitable
    except HTTPException:
        raise
    except Exception as e:
        log.warning("projection read failed: %s", e)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the projections database is unavailable"
        ) from None


NOT_AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong admin token."}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "Kafka or PostgreSQL unavailable."}
}
