"""The decide service and admin API: `create_app(settings)`.

The lifespan starts the runtime (sessions log follower, routing-state listener, Kafka
emitter) with a bounded start-up, and stops it on shutdown. Nothing happens at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.routes import (
    admin_commands,
    admin_config,
    admin_harness,
    admin_routing,
    admin_runs,
    decide,
    health,
    metrics,
)
from api.routes.decide import FastDecide
from api.runtime import Runtime
from api.ui import routes as ui_routes
from api.ui import whatif_page
from infra.settings import Settings


class BodyLimit:
    """413 for bodies over `limit` bytes, whether declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None:
            # The server delivers at most the declared length: checking it is enough.
            if declared > self.limit:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        # Streamed (chunked) body: buffer it up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"request body too large"}'
        await send(
            {
                "type": "http.response.start",
                "status": status.HTTP_413_CONTENT_TOO_LARGE,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class DecideApp(FastAPI):
    """FastAPI, with POST /decide served by `FastDecide` ahead of the whole stack.

    The hot path skips Starlette's middleware and routing and FastAPI's dependency solving;
    everything else (and whatever `FastDecide` hands back) goes through FastAPI as usual.
    """

    fast_decide: FastDecide | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_decide
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == "/decide"
            and scope["method"] == "POST"
        ):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def full_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The FastAPI app proper (middleware, routing, the documented /decide route)."""
        await super().__call__(scope, receive, send)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(
            {"detail": "request body is not valid JSON"}, status.HTTP_400_BAD_REQUEST
        )
    fields = [
        ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        for e in errors
    ]
    detail: list[dict[str, Any]] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return JSONResponse(
        {"detail": detail, "fields": [f for f in fields if f]},
        status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    on_started: Callable[[], None] | None = None,
) -> FastAPI:
    """The API app. `runtime` may be injected (tests); by default it is built from settings.
    `on_started` runs once the runtime has started, before the first request is served."""
    rt = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await rt.stop()

    app = DecideApp(
        title="provenroute decide service",
        version="0.1.0",
        description=(
            "POST /decide picks the cheapest model our own benchmarks prove accurate enough "
            "for a request's difficulty, with per-conversation stickiness; the admin API "
            "configures and triggers benchmarks. Gateways authenticate with the internal "
            "secret, admins with the admin token (both as bearer tokens)."
        ),
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, limit=settings.decide_max_body_bytes)
    app.fast_decide = FastDecide(rt, app.full_stack, max_body_bytes=settings.decide_max_body_bytes)
    for module in (
        decide,
        health,
        metrics,
        admin_config,
        admin_runs,
        admin_routing,
        admin_commands,
        admin_harness,
    ):
        app.include_router(module.router)
    app.include_router(ui_routes.router)
    app.include_router(whatif_page.router)
    return app
