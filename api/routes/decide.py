"""POST /decide: the gateway asks which model serves this request.

Two views of one endpoint. `decide` below is the FastAPI route: it documents /decide in
OpenAPI and serves whatever the fast path hands over. `FastDecide` is what actually serves
the hot path, as a plain ASGI callable ahead of FastAPI (no dependency solving, no pydantic,
no middleware stack): inline constant-time auth before the body is read, the body read under
the size limit, orjson parsing, hand-rolled validation (`models.parse_fast`) and an orjson
answer. Anything unusual — JSON orjson refuses, a body `parse_fast` does not accept, a
content type other than JSON, an empty body, the service still starting — is replayed to
the FastAPI route, so every 4xx (400 bad JSON, 422 naming the field) stays exactly what
the documented route answers.
"""

from __future__ import annotations

import hmac
from typing import Final

import orjson
from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.decide.models import DecideRequest, DecideResponse, parse_fast
from api.deps import InternalAuth, RuntimeDep, ServiceDep
from api.runtime import Runtime

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
async def decide(body: DecideRequest, service: ServiceDep, runtime: RuntimeDep) -> Response:
    """Classify the conversation, derive its tier and pick from the live routing table,
    keeping the conversation's incumbent when switching would not pay off.

    Always answers 200 within the budget: a null `model` with a `nullReason` means "serve
    your own default" (no table, classifier failure or timeout). A sessions problem costs
    stickiness (a fresh pick), never the decision.
    """
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    hints = body.hints.model_dump(exclude_none=True) if body.hints is not None else None
    answer = await service.decide(body.conversationId, messages, hints)
    return Response(
        orjson.dumps(answer),
        media_type="application/json",
        headers={REPLICA_HEADER.decode(): runtime.replica_id},
    )


# ---- the hot path ---------------------------------------------------------------------------

_JSON: Final = (b"content-type", b"application/json")
_UNAUTHORIZED_BODY: Final = b'{"detail":"missing or invalid bearer token"}'
_TOO_LARGE_BODY: Final = b'{"detail":"request body too large"}'
REPLICA_HEADER: Final = b"x-provenroute-replica"


def _start(status: int, body: bytes, *extra: tuple[bytes, bytes]) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (b"content-length", b"%d" % len(body)), *extra],
    }


class FastDecide:
    """POST /decide as a plain ASGI callable; `fallback` is the FastAPI app behind it."""

    def __init__(self, runtime: Runtime, fallback: ASGIApp, *, max_body_bytes: int) -> None:
        self.runtime = runtime
        self.fallback = fallback
        self.limit = max_body_bytes
        self._secret = runtime.settings.internal_secret.get_secret_value().encode()
        self._unauthorized = _start(
            401, _UNAUTHORIZED_BODY, (b"www-authenticate", b'Bearer realm="decide"')
        )
        self._too_large = _start(413, _TOO_LARGE_BODY)
        # Which replica answered: gateways and the demo see how load spreads.
        self._replica = (REPLICA_HEADER, runtime.replica_id.encode())

    def _authorized(self, value: bytes | None) -> bool:
        # As FastAPI's HTTPBearer reads it (first header, latin-1, "Bearer <token>"), then
        # compare_digest: constant time in the secret's length, whatever is presented.
        if not value:
            return False
        scheme, _, token = value.decode("latin-1").partition(" ")
        token = token.strip()
        if not scheme or not token or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.encode(), self._secret)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization: bytes | None = None
        content_type: bytes | None = None
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        # Same precedence as the FastAPI stack: an oversized declared body, then auth.
        if declared is not None and declared > self.limit:
            await self._answer(send, self._too_large, _TOO_LARGE_BODY)
            return
        if not self._authorized(authorization):
            await self._answer(send, self._unauthorized, _UNAUTHORIZED_BODY)
            return
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            await self._answer(send, self._too_large, _TOO_LARGE_BODY)
            return
        if body is None:  # the client went away
            return
        service = self.runtime.service
        parsed = None
        if service is not None and body and _is_json(content_type):
            try:
                parsed = parse_fast(orjson.loads(body))
            except orjson.JSONDecodeError:
                parsed = None
        if parsed is None:
            await self.fallback(scope, _replay(body, receive), send)
            return
        assert service is not None
        answer = orjson.dumps(await service.decide(*parsed))
        await send(_start(200, answer, self._replica))
        await send({"type": "http.response.body", "body": answer})

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body (None: the client went away); `_TooLarge` over the limit."""
        message = await receive()
        if message["type"] != "http.request":
            return None
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.limit:
                raise _TooLarge
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _answer(send: Send, start: Message, body: bytes) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return True  # FastAPI parses a body without a content type as JSON too
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
