"""The published routing table, the classifier winner and the classifier override."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.decide.classifier import resolve_classifier_model
from api.deps import AdminAuth, RuntimeDep
from api.routes._admin import NOT_AUTHENTICATED, UNAVAILABLE, CommandPosted, post, read
from contracts.commands import SetClassifierOverride
from contracts.config import MODEL_ID_PATTERN
from contracts.routing_table import ClassifierWinner, RoutingTable
from infra.clock import utc_now
from streams.event_log import new_command_id

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAuth])


@router.get(
    "/routing-table",
    response_model=RoutingTable,
    responses={
        404: {"description": "No table published (by then)."},
        **NOT_AUTHENTICATED,
        **UNAVAILABLE,
    },
    summary="The live routing table, or the one live at `as_of`",
)
async def routing_table(
    runtime: RuntimeDep,
    as_of: Annotated[
        datetime | None,
        Query(description="ISO-8601 timestamp: the table that was live then."),
    ] = None,
) -> RoutingTable:
    table = await read(runtime.read_model.routing_table_as_of(as_of))
    if table is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no routing table published")
    return table


class EffectiveClassifier(BaseModel):
    model: str
    source: Literal["override", "winner", "default"]


class ClassifierStatus(BaseModel):
    winner: ClassifierWinner | None
    """The latest benchmark winner (null before any classifier run chose one)."""
    override: str | None
    """The admin override (null: none set, the winner applies)."""
    effective: EffectiveClassifier
    """What /decide uses: override, else winner, else the built-in default."""


@router.get(
    "/classifier-winner",
    response_model=ClassifierStatus,
    responses={**NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="The classifier winner, the override and the model /decide uses",
)
async def classifier_winner(runtime: RuntimeDep) -> ClassifierStatus:
    winner = await read(runtime.read_model.latest_classifier_winner())
    override = await read(runtime.read_model.classifier_override())
    effective = resolve_classifier_model(
        override, winner, runtime.settings.default_classifier_model
    )
    return ClassifierStatus(
        winner=winner,
        override=override,
        effective=EffectiveClassifier(model=effective.model, source=effective.source),
    )


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(pattern=MODEL_ID_PATTERN, max_length=200)] | None
    """The classifier model to pin; null clears the override (the winner applies again)."""


@router.put(
    "/classifier-override",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandPosted,
    responses={**NOT_AUTHENTICATED, **UNAVAILABLE},
    summary="Pin or clear the classifier model (posts SetClassifierOverride)",
)
async def set_override(body: OverrideRequest, runtime: RuntimeDep) -> CommandPosted:
    command = SetClassifierOverride(
        command_id=new_command_id(), issued_at=utc_now(), model=body.model
    )
    return await post(runtime, command)
