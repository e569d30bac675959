"""The worker side of an agent CLI's model traffic: an HTTP proxy on a unix socket.

A job container has no network and no credential. Its agent CLI talks to
`http://127.0.0.1:PORT/v1`; a forwarder inside the container (`container/agent_run.py`)
relays those bytes to a unix socket bind-mounted from the worker, served here. The proxy:

- holds the credential of the run's `benchmarkIdentity` and attaches it upstream (whatever
  the CLI sent as its key is dropped);
- pins what the run measures: the model id and the reasoning effort of the snapshot
  (OpenRouter's `reasoning: {effort}`, as the built-in harness sends it), and asks for
  usage (with cost) in every answer;
- names the case and repetition in `X-Provenroute-Case-Hash` / `X-Provenroute-Rep` (the
  simulated provider draws its answers from them; real providers ignore unknown headers);
- enforces the case's budget (deadline, model calls, tokens): a call past it is refused
  with 403, which the CLIs treat as final (no retry loop);
- meters tokens and cost per case from the provider's answer — `usage.cost`, else the
  price table — never from the CLI's own price table;
- records every call (`ProxyCall`) for diagnostics and `provenroute harness try`.

Upstream failures (connection refused, timeouts, 5xx) are answered as 502/504 and marked
`upstream_failed`; the harness turns a case whose last call failed that way into a
timed-out case, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
from aiohttp import web
from pydantic import SecretStr

from infra.provider.pricing import PriceTable, reported_cost
from streams.sandbox import redact

log = logging.getLogger(__name__)

CASE_HASH_HEADER: Final = "X-Provenroute-Case-Hash"
REP_HEADER: Final = "X-Provenroute-Rep"
SOCKET_NAME: Final = "model.sock"
_ERROR_DETAIL: Final = 300


@dataclass(frozen=True, slots=True)
class CaseBudget:
    """What one case may spend through the proxy."""

    deadline: float
    """`time.monotonic()` after which calls are refused."""
    max_calls: int = 40
    max_tokens: int = 2_000_000
    """Prompt + completion tokens over all calls (agent CLIs resend a ~15k-token prompt)."""


@dataclass(frozen=True, slots=True)
class ProxyCall:
    """One model call that reached the proxy (refused ones included)."""

    index: int
    at_ms: float
    """When it started, relative to the case's start."""
    duration_ms: float
    status: int
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    """Why it failed (redacted, short); None on success."""
    upstream_failed: bool = False
    """The provider could not be reached or did not answer in time (not a refusal)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class CaseMeter:
    """Everything the proxy saw for one case (one CLI attempt or several)."""

    case_hash: str
    rep: int
    budget: CaseBudget
    started: float = field(default_factory=time.monotonic)
    calls: list[ProxyCall] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float | None:
        known = [c.cost_usd for c in self.calls if c.cost_usd is not None]
        return sum(known) if known else None

    @property
    def model_calls(self) -> int:
        """Calls that were forwarded upstream (refusals not counted)."""
        return sum(1 for c in self.calls if c.status != 403)

    @property
    def provider_dead(self) -> bool:
        """The last call failed upstream: the provider is gone, not the model wrong."""
        return bool(self.calls) and self.calls[-1].upstream_failed

    def refusal(self) -> str | None:
        if time.monotonic() >= self.budget.deadline:
            return "case budget exhausted: deadline passed"
        if self.model_calls >= self.budget.max_calls:
            return f"case budget exhausted: {self.budget.max_calls} model calls"
        if self.tokens >= self.budget.max_tokens:
            return f"case budget exhausted: {self.budget.max_tokens} tokens"
        return None


class _SseUsage:
    """Follows an SSE stream as it passes through: the finish reason and the usage chunk."""

    def __init__(self) -> None:
        self._buf = b""
        self.usage: dict[str, Any] = {}
        self.finish_reason: str | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    self.finish_reason = str(choice["finish_reason"])


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


class ModelProxy:
    """One job's model proxy, serving `socket_path` (use `async with`)."""

    def __init__(
        self,
        socket_path: Path,
        *,
        base_url: str,
        api_key: SecretStr,
        model: str,
        reasoning_effort: str | None = None,
        price_table: PriceTable | None = None,
        http: httpx.AsyncClient | None = None,
        redact_also: Iterable[str] = (),
    ) -> None:
        self.socket_path = socket_path
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.model = model
        self.reasoning_effort = reasoning_effort
        self.price_table = price_table or PriceTable()
        self._http = http or httpx.AsyncClient()
        self._owns_http = http is None
        self._secrets = (api_key.get_secret_value(), *redact_also)
        self._runner: web.AppRunner | None = None
        self.meter: CaseMeter | None = None

    def __repr__(self) -> str:
        return f"ModelProxy(socket={str(self.socket_path)!r}, model={self.model!r})"

    async def __aenter__(self) -> ModelProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        await web.UnixSite(self._runner, str(self.socket_path)).start()
        # The container's user (uid 10001) must be able to connect; the directory is
        # bind-mounted into that one container only.
        os.chmod(self.socket_path, 0o666)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------ cases

    def begin_case(self, case_hash: str, rep: int, budget: CaseBudget) -> CaseMeter:
        self.meter = CaseMeter(case_hash, rep, budget)
        return self.meter

    def end_case(self) -> CaseMeter | None:
        meter, self.meter = self.meter, None
        return meter

    # ------------------------------------------------------------------ handlers

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model}]})

    def _record(self, meter: CaseMeter, t0: float, status: int, stream: bool, **kw: Any) -> None:
        now = time.monotonic()
        meter.calls.append(
            ProxyCall(
                index=len(meter.calls),
                at_ms=round((t0 - meter.started) * 1000.0, 1),
                duration_ms=round((now - t0) * 1000.0, 1),
                status=status,
                stream=stream,
                **kw,
            )
        )

    def _error(self, status: int, message: str) -> web.Response:
        body = {"error": {"message": message, "type": "provenroute_proxy", "code": status}}
        return web.json_response(body, status=status)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        meter = self.meter
        t0 = time.monotonic()
        if meter is None:
            return self._error(409, "no case is running")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self._record(meter, t0, 400, False, error="request body is not a JSON object")
            return self._error(400, "request body must be a JSON object")
        stream = bool(body.get("stream"))
        refusal = meter.refusal()
        if refusal is not None:
            self._record(meter, t0, 403, stream, error=refusal)
            return self._error(403, refusal)
        payload = orjson.dumps(self._upstream_body(body))
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Content-Type": "application/json",
            CASE_HASH_HEADER: meter.case_hash,
            REP_HEADER: str(meter.rep),
        }
        remaining = max(meter.budget.deadline - time.monotonic(), 0.1)
        timeout = httpx.Timeout(remaining, connect=min(remaining, 10.0))
        upstream = self._http.build_request(
            "POST",
            f"{self.base_url}/chat/completions",
            content=payload,
            headers=headers,
            timeout=timeout,
        )
        try:
            response = await self._http.send(upstream, stream=True)
        except httpx.TimeoutException:
            self._record(meter, t0, 504, stream, error="provider timed out", upstream_failed=True)
            return self._error(504, "provider timed out")
        except httpx.TransportError as e:
            why = self._clean(f"provider unreachable: {type(e).__name__}")
            self._record(meter, t0, 502, stream, error=why, upstream_failed=True)
            return self._error(502, why)
        try:
            if response.status_code != 200:
                return await self._relay_error(meter, t0, stream, response)
            if stream:
                return await self._relay_stream(request, meter, t0, response)
            return await self._relay_whole(meter, t0, response)
        except httpx.TimeoutException:
            self._record(meter, t0, 504, stream, error="provider timed out", upstream_failed=True)
            return self._error(504, "provider timed out mid-answer")
        except httpx.TransportError as e:
            why = self._clean(f"provider connection broke: {type(e).__name__}")
            self._record(meter, t0, 502, stream, error=why, upstream_failed=True)
            return self._error(502, why)
        finally:
            await response.aclose()

    def _upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        out = dict(body)
        out["model"] = self.model
        out.pop("reasoning_effort", None)
        if self.reasoning_effort is not None:
            out["reasoning"] = {"effort": self.reasoning_effort}
        else:
            out.pop("reasoning", None)
        out["usage"] = {"include": True}
        if out.get("stream"):
            out["stream_options"] = {"include_usage": True}
        return out

    async def _relay_error(
        self, meter: CaseMeter, t0: float, stream: bool, response: httpx.Response
    ) -> web.Response:
        raw = self._clean((await response.aread()).decode("utf-8", "replace"))
        status = response.status_code
        self._record(
            meter,
            t0,
            status,
            stream,
            error=f"provider answered {status}: {raw[:_ERROR_DETAIL]}",
            upstream_failed=status >= 500 or status == 408,
        )
        ctype = response.headers.get("content-type", "application/json")
        return web.Response(status=status, text=raw, content_type=ctype.split(";")[0])

    async def _relay_stream(
        self, request: web.Request, meter: CaseMeter, t0: float, response: httpx.Response
    ) -> web.StreamResponse:
        out = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await out.prepare(request)
        follow = _SseUsage()
        async for data in response.aiter_raw():
            follow.feed(data)
            await out.write(data)
        await out.write_eof()
        self._metered(meter, t0, True, follow.usage, follow.finish_reason)
        return out

    async def _relay_whole(
        self, meter: CaseMeter, t0: float, response: httpx.Response
    ) -> web.Response:
        raw = await response.aread()
        usage: dict[str, Any] = {}
        finish = None
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
            data = orjson.loads(raw)
            usage = data.get("usage") or {}
            finish = data["choices"][0].get("finish_reason")
        self._metered(meter, t0, False, usage, finish)
        return web.Response(status=200, body=raw, content_type="application/json")

    def _metered(
        self,
        meter: CaseMeter,
        t0: float,
        stream: bool,
        usage: dict[str, Any],
        finish: str | None,
    ) -> None:
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        cost = reported_cost(usage)
        if cost is None:
            cost = self.price_table.cost(self.model, prompt, completion)
        self._record(
            meter,
            t0,
            200,
            stream,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            finish_reason=finish if isinstance(finish, str) else None,
        )

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)
