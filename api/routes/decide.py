"""POST /decide: the gateway asks which model serves this request."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response

from api.decide.models import DecideRequest, DecideResponse
from api.deps import InternalAuth, ServiceDep

router = APIRouter(tags=["decide"])


@router.post(
    "/decide",
    response_model=DecideResponse,
    dependencies=[InternalAuth],
    responses={
        400: {"description": "The body is not JSON."},
        401: {"description": "Missing or wrong internal secret."},
        413: {"description": "The body exceeds the configured maximum."},
    },
    summary="Pick the model for one request",
)
async def decide(body: DecideRequest, service: ServiceDep) -> Response:
    """Classify the conversation, derive its tier and pick from the live routing table,
    keeping the conversation's incumbent when switching would not pay off.

    Always answers 200 within the budget: a null `model` with a `nullReason` means "serve
    your own default" (no table, classifier failure or timeout, sessions unavailable).
    """
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    hints = body.hints.model_dump(exclude_none=True) if body.hints is not None else None
    answer = await service.decide(body.conversationId, messages, hints)
    return Response(orjson.dumps(answer), media_type="application/json")
