"""The worker-side model proxy on a real unix socket, against a recording upstream and the
real simulated provider: credential, pinned model and effort, case headers, budget,
metering from the provider's usage (whole and streamed) and a dead provider."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from contracts.cases import content_hash
from infra.provider.pricing import ModelPrice, PriceTable
from simulator import behaviour
from simulator.catalog import load_cases
from streams.model_proxy import CASE_HASH_HEADER, REP_HEADER, CaseBudget, ModelProxy
from tests.sim_server import serve_sim

# The stub upstream fixture lives on the session loop (the project's fixture loop scope).
pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = "sk-or-v1-PLANTED-" + uuid.uuid4().hex
CLI_KEY = "what-the-cli-sends"


class Upstream:
    """A provider stub that records what reaches it and answers with usage (and cost)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.cost: float | None = 0.0125

    def usage(self) -> dict[str, Any]:
        u: dict[str, Any] = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}
        if self.cost is not None:
            u["cost"] = self.cost
        return u

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hi"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self.usage(),
                }
            )
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        chunks = [
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "h"},
                        "finish_reason": None,
                    }
                ]
            },
            {"choices": [{"index": 0, "delta": {"content": "i"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": self.usage()},
        ]
        for c in chunks:
            await out.write(b"data: " + json.dumps(c).encode() + b"\n\n")
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    stub = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stub.chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield stub, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "model.sock"


def _client(sock: Path) -> httpx.AsyncClient:
    """What the in-container forwarder amounts to: HTTP over the unix socket."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), timeout=30)


async def _post(sock: Path, body: dict[str, Any]) -> httpx.Response:
    async with _client(sock) as http:
        return await http.post(
            "http://proxy/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {CLI_KEY}"},
        )


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}


async def test_credential_model_effort_and_case_are_the_proxys(
    upstream: tuple[Upstream, str], sock: Path
) -> None:
    stub, url = upstream
    async with ModelProxy(
        sock, base_url=url, api_key=SecretStr(KEY), model="sim/balanced", reasoning_effort="high"
    ) as proxy:
        meter = proxy.begin_case("abc123", 2, CaseBudget(time.monotonic() + 30))
        res = await _post(sock, BODY)
        assert res.status_code == 200 and res.json()["choices"][0]["message"]["content"] == "hi"
        assert oct(sock.stat().st_mode & 0o777) == oct(0o666)
    ((headers, body),) = stub.requests
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert CLI_KEY not in json.dumps(headers)
    assert (headers[CASE_HASH_HEADER], headers[REP_HEADER]) == ("abc123", "2")
    assert body["model"] == "sim/balanced"
    assert body["reasoning"] == {"effort": "high"} and "reasoning_effort" not in body
    assert body["usage"] == {"include": True}
    (call,) = meter.calls
    assert (call.status, call.prompt_tokens, call.completion_tokens) == (200, 1000, 50)
    assert call.cost_usd == meter.cost_usd == 0.0125
    assert KEY not in json.dumps([c.to_dict() for c in meter.calls])


async def test_streamed_answers_pass_through_and_are_metered_from_the_usage_chunk(
    upstream: tuple[Upstream, str], sock: Path
) -> None:
    stub, url = upstream
    async with ModelProxy(sock, base_url=url, api_key=SecretStr(KEY), model="sim/x") as proxy:
        meter = proxy.begin_case("h", 0, CaseBudget(time.monotonic() + 30))
        res = await _post(sock, {**BODY, "stream": True})
    assert res.headers["content-type"].startswith("text/event-stream")
    text = "".join(
        (json.loads(line[6:])["choices"] or [{"delta": {}}])[0]["delta"].get("content") or ""
        for line in res.text.splitlines()
        if line.startswith("data: {")
    )
    assert text == "hi" and res.text.rstrip().endswith("data: [DONE]")
    _, body = stub.requests[0]
    assert body["stream_options"] == {"include_usage": True}
    assert "reasoning" not in body  # no pinned effort: none is invented
    (call,) = meter.calls
    assert call.stream and call.finish_reason == "stop" and call.cost_usd == 0.0125


async def test_without_a_reported_cost_the_price_table_meters_never_the_cli(
    upstream: tuple[Upstream, str], sock: Path
) -> None:
    stub, url = upstream
    stub.cost = None
    prices = PriceTable({"sim/x": ModelPrice(input_per_mtok=2.0, output_per_mtok=10.0)})
    async with ModelProxy(
        sock, base_url=url, api_key=SecretStr(KEY), model="sim/x", price_table=prices
    ) as proxy:
        meter = proxy.begin_case("h", 0, CaseBudget(time.monotonic() + 30))
        await _post(sock, BODY)
    assert meter.cost_usd == pytest.approx((1000 * 2.0 + 50 * 10.0) / 1e6)


@pytest.mark.parametrize(
    ("budget", "calls_before", "why"),
    [
        (dict(max_calls=2), 2, "2 model calls"),
        (dict(max_tokens=2000), 2, "2000 tokens"),
        (dict(deadline_in=-1.0), 0, "deadline"),
    ],
)
async def test_a_call_past_the_case_budget_is_refused_and_never_forwarded(
    upstream: tuple[Upstream, str], sock: Path, budget: dict[str, Any], calls_before: int, why: str
) -> None:
    stub, url = upstream
    deadline = time.monotonic() + float(budget.pop("deadline_in", 30.0))
    async with ModelProxy(sock, base_url=url, api_key=SecretStr(KEY), model="sim/x") as proxy:
        meter = proxy.begin_case("h", 0, CaseBudget(deadline, **budget))
        statuses = [(await _post(sock, BODY)).status_code for _ in range(calls_before + 1)]
        refused = await _post(sock, BODY)
    assert statuses == [200] * calls_before + [403]
    assert refused.status_code == 403 and why in refused.json()["error"]["message"]
    assert len(stub.requests) == calls_before
    assert meter.model_calls == calls_before and not meter.provider_dead


async def test_a_dead_provider_is_a_502_marked_upstream_failed(sock: Path) -> None:
    async with ModelProxy(
        sock, base_url="http://127.0.0.1:9/v1", api_key=SecretStr(KEY), model="sim/x"
    ) as proxy:
        meter = proxy.begin_case("h", 0, CaseBudget(time.monotonic() + 30))
        res = await _post(sock, BODY)
    assert res.status_code == 502
    assert meter.provider_dead and meter.calls[0].upstream_failed
    assert KEY not in res.text and KEY not in (meter.calls[0].error or "")


async def test_no_case_running_is_refused(upstream: tuple[Upstream, str], sock: Path) -> None:
    stub, url = upstream
    async with ModelProxy(sock, base_url=url, api_key=SecretStr(KEY), model="sim/x"):
        assert (await _post(sock, BODY)).status_code == 409
    assert stub.requests == []


async def test_through_the_simulated_provider_the_case_header_drives_the_draw(sock: Path) -> None:
    """The CLI's wrapped prompt is no dataset case; the proxy's header names it."""
    _, decider = load_cases()
    case = next(c for c in decider if behaviour.is_agentic(c))
    with serve_sim({KEY}) as url:
        async with ModelProxy(
            sock, base_url=url, api_key=SecretStr(KEY), model="sim/frontier"
        ) as proxy:
            meter = proxy.begin_case(
                content_hash(case.prompt), 0, CaseBudget(time.monotonic() + 30)
            )
            body = {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "wrapped: " + case.prompt}],
                    }
                ],
                "tools": [{"type": "function", "function": {"name": "bash", "parameters": {}}}],
            }
            res = await _post(sock, body)
    (call,) = res.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "bash"
    assert meter.cost_usd is not None and meter.cost_usd == res.json()["usage"]["cost"]


async def test_stale_socket_dirs_are_swept_live_ones_kept(
    upstream: tuple[Upstream, str], tmp_path: Path
) -> None:
    import os

    from streams.cli_job import sweep_stale_socket_dirs

    _, url = upstream
    live, dead, fresh = (tmp_path / n for n in ("live", "dead", "fresh"))
    for d in (live, dead, fresh):
        d.mkdir()
    (dead / "model.sock").touch()  # what a killed worker leaves: a socket nobody serves
    old = time.time() - 3600
    async with ModelProxy(live / "model.sock", base_url=url, api_key=SecretStr(KEY), model="m"):
        for d in (live, dead):
            os.utime(d, (old, old))
        assert sweep_stale_socket_dirs(tmp_path) == 1
    assert live.exists() and fresh.exists() and not dead.exists()
