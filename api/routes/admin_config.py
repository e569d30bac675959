"""GET/PUT /admin/config: the live benchmark config (PUT posts SaveBenchmarkConfig)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from api.deps import AdminAuth, RuntimeDep
from api.routes._admin import NOT_AUTHENTICATED, UNAVAILABLE, CommandPosted, post, read
from contracts.commands import SaveBenchmarkConfig
from contracts.config import BenchmarkConfig
from infra.clock import utc_now
from streams.event_log import new_command_id

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAuth])


class LiveConfig(BaseModel):
    configId: str
    savedAt: str
    config: BenchmarkConfig


@router.get(
    "/config",
    response_model=LiveConfig,
    responses={404: {"description": "No config saved yet."}, **NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="The live benchmark config",
)
async def get_config(runtime: RuntimeDep) -> LiveConfig:
    saved = await read(runtime.read_model.live_config())
    if saved is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no benchmark config saved yet")
    return LiveConfig(configId=saved.config_id, savedAt=saved.saved_at, config=saved.config)


@router.put(
    "/config",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPosted,
    responses={**NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="Save a new benchmark config (posts SaveBenchmarkConfig)",
)
async def put_config(config: BenchmarkConfig, runtime: RuntimeDep) -> CommandPosted:
    command = SaveBenchmarkConfig(command_id=new_command_id(), issued_at=utc_now(), config=config)
    return await post(runtime, command)
