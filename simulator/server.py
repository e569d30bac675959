"""The simulated provider: an OpenAI-compatible HTTP server over a fleet of sim models.

`POST /v1/chat/completions` and `GET /v1/models`. Everything it serves is labelled
simulated: model ids `sim/...`, `owned_by: "simulated"`, `system_fingerprint:
"provenroute-simulated"`, `"simulated": true` in bodies and `X-Provenroute-Simulated: 1`
on every response (errors included).

The request protocol others rely on:
- the case is recognised by content_hash of the FIRST user message's content, or by the
  `X-Provenroute-Case-Hash` header (agent CLIs wrap the prompt in their own text; the
  worker's model proxy attaches the header);
- the repetition is the `X-Provenroute-Rep` header, else the OpenAI `seed` field (default 0);
- the agent step is the number of assistant messages already in the request;
- `stream: true` answers with SSE chunks (`simulator.sse`), the usage chunk included when
  `stream_options.include_usage` (or OpenRouter's `usage.include`) asks for it.
Answers come from the pure `simulator.behaviour` module; this module only adds HTTP, auth,
latency sleeps and the transient 5xx/429 bursts (which need a per-key attempt counter).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Collection
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.cases import ClassifierCase, DeciderCase
from contracts.classification import Classification
from contracts.classifier_prompt import CLASSIFIER_SYSTEM_PROMPT, heuristic_classification
from infra.provider.conditions import SIM_LATENCY_SCALE_HEADER as CONDITIONS_HEADER
from simulator import behaviour
from simulator.behaviour import Plan
from simulator.catalog import CaseIndex, load_cases
from simulator.completions import (
    completion_response,
    message_text,
    sse_events,
    wants_usage,
)
from simulator.fleet import Fleet, ModelProfile, load_fleet

log = logging.getLogger(__name__)

LATENCY_SCALE_ENV: Final = "PROVENROUTE_SIM_LATENCY_SCALE"
SIM_HEADER: Final = "X-Provenroute-Simulated"
SIM_LATENCY_SCALE_HEADER: Final = CONDITIONS_HEADER
CASE_HASH_HEADER: Final = "X-Provenroute-Case-Hash"
REP_HEADER: Final = "X-Provenroute-Rep"
_MAX_TRACKED_BURSTS: Final = 100_000
_POLL_S: Final = 0.2


def latency_scale_from_env() -> float:
    raw = os.environ.get(LATENCY_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{LATENCY_SCALE_ENV} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{LATENCY_SCALE_ENV} must be >= 0, got {value}")
    return value


class _SimulatedHeader:
    """Pure ASGI middleware: stamps every HTTP response as simulated, with the latency scale
    it serves at (a benchmark run records it; `provenroute serve` compares it)."""

    def __init__(self, app: ASGIApp, latency_scale: float = 1.0) -> None:
        self.app = app
        self.scale = repr(latency_scale).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (SIM_HEADER.lower().encode(), b"1"),
                    (SIM_LATENCY_SCALE_HEADER.lower().encode(), self.scale),
                ]
            await send(message)

        await self.app(scope, receive, stamped)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _error(
    status: int, message: str, kind: str, code: str | int | None = None, **h: str
) -> Response:
    body = {
        "error": {"message": message, "type": kind, "code": code if code is not None else status},
        "simulated": True,
    }
    return _json(status, body, headers=h or None)


class _Disconnected(Exception):
    pass


async def _sleep(request: Request, seconds: float) -> None:
    """Sleep, but stop early when the client hung up (timeouts leave nothing behind)."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, _POLL_S))
        if await request.is_disconnected():
            raise _Disconnected


class SimState:
    """Per-server state: the fleet, the case index and the transient-failure counters."""

    def __init__(self, fleet: Fleet, cases: CaseIndex, latency_scale: float) -> None:
        self.fleet = fleet
        self.cases = cases
        self.latency_scale = latency_scale
        self._attempts: OrderedDict[tuple[str, str, int, int], int] = OrderedDict()

    def take_transient(self, key: tuple[str, str, int, int], burst: int) -> bool:
        """True while the key's burst of transient failures is not yet exhausted."""
        seen = self._attempts.get(key, 0)
        if seen >= burst:
            return False
        self._attempts[key] = seen + 1
        self._attempts.move_to_end(key)
        while len(self._attempts) > _MAX_TRACKED_BURSTS:
            self._attempts.popitem(last=False)
        return True


def _is_classifier_request(messages: list[Any]) -> bool:
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "system":
            text = message_text(m.get("content"))
            if text == CLASSIFIER_SYSTEM_PROMPT or (
                '"taskType"' in text and '"subtaskType"' in text
            ):
                return True
    return False


def _plan(
    state: SimState,
    profile: ModelProfile,
    body: dict[str, Any],
    rep: int,
    case_hash: str | None = None,
) -> tuple[Plan, str, int]:
    messages: list[Any] = body["messages"]
    step = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    first_user = next(
        (
            message_text(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    digest, ref = state.cases.lookup(first_user)
    if case_hash and ref is None:
        digest, ref = case_hash, state.cases.by_hash.get(case_hash)
    if ref is not None and ref.kind == "classifier":
        assert isinstance(ref.case, ClassifierCase)
        return behaviour.plan_classifier(profile, ref.case.label, digest, rep), digest, step
    if ref is not None and ref.kind == "decider":
        assert isinstance(ref.case, DeciderCase)
        tools = body.get("tools") or []
        tool_names = [
            t["function"].get("name")
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        last_tool = next(
            (
                message_text(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "tool"
            ),
            None,
        )
        plan = behaviour.plan_decider(profile, ref.case, digest, rep, step, last_tool, tool_names)
        return plan, digest, step
    heuristic: Classification | None = None
    if _is_classifier_request(messages):
        heuristic = heuristic_classification(
            [{"role": "user", "content": first_user}], reason="simulated provider: unknown request"
        )
    return behaviour.plan_unknown(profile, digest, rep, heuristic), digest, step


def create_app(
    fleet: Fleet | None = None,
    *,
    cases: CaseIndex | None = None,
    latency_scale: float | None = None,
    api_keys: Collection[str] | None = None,
) -> FastAPI:
    """The simulated provider app. `api_keys` None accepts any non-empty bearer key."""
    fleet = fleet or load_fleet()
    if cases is None:
        cases = CaseIndex.build(*load_cases())
    scale = latency_scale_from_env() if latency_scale is None else latency_scale
    state = SimState(fleet, cases, scale)
    allowed = frozenset(api_keys) if api_keys is not None else None
    log.info(
        "simulated provider: %d models, %d known cases, latency scale %s",
        len(fleet.models),
        len(cases),
        scale,
    )

    app = FastAPI(title="provenroute simulated provider", docs_url=None, redoc_url=None)
    app.state.sim = state
    app.add_middleware(_SimulatedHeader, latency_scale=scale)

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        return allowed is None or key.strip() in allowed

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "simulated": True, "models": len(fleet.models), "cases": len(cases)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "simulated": True,
            "data": [
                {
                    "id": m.id,
                    "object": "model",
                    "created": 0,
                    "owned_by": "simulated",
                    "name": f"{m.id} (simulated)",
                    "description": m.description,
                    "simulated": True,
                    "pricing": {
                        # OpenRouter's shape: USD per token, as strings.
                        "prompt": f"{m.price.input_per_mtok / 1e6:.12g}",
                        "completion": f"{m.price.output_per_mtok / 1e6:.12g}",
                    },
                }
                for m in fleet.models
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or invalid API key", "authentication_error", 401)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        model_id = body.get("model")
        messages = body.get("messages")
        if not isinstance(model_id, str) or not isinstance(messages, list) or not messages:
            return _error(
                400, "`model` and a non-empty `messages` list are required", "invalid_request_error"
            )
        profile = fleet.get(model_id)
        if profile is None:
            return _error(
                404,
                f"model {model_id!r} is not in the simulated fleet",
                "invalid_request_error",
                "model_not_found",
            )
        seed = body.get("seed", 0)
        rep = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        rep_header = request.headers.get(REP_HEADER, "")
        if rep_header.isdigit():
            rep = int(rep_header)
        case_hash = request.headers.get(CASE_HASH_HEADER, "").strip().lower() or None

        plan, digest, step = _plan(state, profile, body, rep, case_hash)
        try:
            if (
                step == 0
                and plan.failure == "server_error"
                and state.take_transient(
                    (profile.id, digest, rep, step), profile.server_error_burst
                )
            ):
                return _error(503, "simulated upstream overload", "server_error")
            if (
                step == 0
                and plan.failure == "rate_limited"
                and state.take_transient((profile.id, digest, rep, step), 1)
            ):
                return _error(
                    429, "simulated rate limit", "rate_limit_error", **{"Retry-After": "0"}
                )
            if step == 0 and plan.failure == "timeout":
                await _sleep(request, fleet.timeout_sleep_s)
                return _error(408, "simulated timeout", "timeout")
            await _sleep(
                request,
                behaviour.latency_ms(profile, digest, rep, step, state.latency_scale) / 1000,
            )
        except _Disconnected:
            return Response(status_code=499)
        completion = completion_response(profile, body, plan, digest, rep, step)
        if body.get("stream"):
            return StreamingResponse(
                sse_events(completion, include_usage=wants_usage(body)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return _json(200, completion)

    return app
