"""The provider client's request shape and response parsing, against scripted endpoints
(httpx.MockTransport): what the simulated provider never sends."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from infra.provider import (
    ModelPrice,
    PriceTable,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderClient,
    ProviderTimeout,
    ProviderUnavailable,
)

KEY = "sk-or-v1-do-not-leak-7f3a"
OK = {
    "model": "openai/gpt-x",
    "choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "cost": 0.00042},
}


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], **kw: object
) -> tuple[ProviderClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    kw.setdefault("backoff_initial_s", 0.001)
    return ProviderClient("https://example.test/api/v1/", SecretStr(KEY), http=http, **kw), seen  # type: ignore[arg-type]


async def test_request_shape_openrouter_reasoning_seed_tools() -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=OK))
    tools = [{"type": "function", "function": {"name": "run_shell", "parameters": {}}}]
    result = await client.chat(
        model="openai/gpt-x",
        messages=[{"role": "user", "content": "hi"}],
        tools=tools,
        reasoning_effort="high",
        seed=3,
        max_tokens=50,
    )
    (req,) = seen
    assert str(req.url) == "https://example.test/api/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(req.content)
    assert body == {
        "model": "openai/gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": tools,
        "reasoning": {"effort": "high"},
        "seed": 3,
        "max_tokens": 50,
    }
    assert result.text == "hello" and result.cost_usd == 0.00042
    assert (result.input_tokens, result.output_tokens) == (10, 2)
    assert result.finish_reason == "stop" and result.model == "openai/gpt-x"


async def test_optional_fields_are_omitted() -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=OK))
    await client.chat(model="m", messages=[{"role": "user", "content": "hi"}])
    assert set(json.loads(seen[0].content)) == {"model", "messages"}


async def test_tool_calls_and_content_parts_are_parsed() -> None:
    raw_calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "run_shell", "arguments": '{"command": "ls"}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "list_dir", "arguments": ""}},
        {"id": "c3", "type": "function", "function": {"name": "read_file", "arguments": "{oops"}},
    ]
    answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "tool_calls": raw_calls,
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5},
    }
    client, _ = client_for(lambda r: httpx.Response(200, json=answer))
    result = await client.chat(model="m", messages=[{"role": "user", "content": "go"}])
    assert result.text == "ab"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("c1", "run_shell", {"command": "ls"}),
        ("c2", "list_dir", {}),
        ("c3", "read_file", {}),
    ]
    assert result.tool_calls[2].arguments_error is not None
    assert result.assistant_message == {
        "role": "assistant",
        "content": "ab",
        "tool_calls": raw_calls,
    }
    assert result.cost_usd is None  # no usage.cost, no price table


async def test_price_table_fallback() -> None:
    answer = {**OK, "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 500_000}}
    table = PriceTable({"m": ModelPrice(input_per_mtok=0.5, output_per_mtok=2.0)})
    client, _ = client_for(lambda r: httpx.Response(200, json=answer), price_table=table)
    result = await client.chat(model="m", messages=[{"role": "user", "content": "x"}])
    assert result.cost_usd == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, content=b"<html>gateway</html>"), ProviderBadResponse),
        (httpx.Response(200, json={"choices": []}), ProviderBadResponse),
        (httpx.Response(200, json={"choices": [{"message": {"content": 3}}]}), ProviderBadResponse),
        (httpx.Response(400, json={"error": {"message": "bad"}}), ProviderBadResponse),
        (
            httpx.Response(403, json={"error": {"message": f"key {KEY} is disabled"}}),
            ProviderAuthError,
        ),
        (httpx.Response(408, json={"error": {"message": "timeout"}}), ProviderTimeout),
        (httpx.Response(502, json={"error": {"message": "upstream"}}), ProviderUnavailable),
        (httpx.Response(200, json={"error": {"code": 401, "message": "no"}}), ProviderAuthError),
        (httpx.Response(200, json={"error": {"code": 502, "message": "up"}}), ProviderUnavailable),
    ],
)
async def test_status_and_body_map_to_typed_errors(
    response: httpx.Response, error: type[Exception]
) -> None:
    client, seen = client_for(lambda r: response, max_retries=2)
    with pytest.raises(error) as info:
        await client.chat(model="m", messages=[{"role": "user", "content": "x"}])
    assert KEY not in str(info.value)  # redacted even when the endpoint echoes it
    retried = error is ProviderUnavailable
    assert len(seen) == (3 if retried else 1)


async def test_retry_after_is_honoured_then_succeeds() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0.05"}, json={}),
            httpx.Response(503, json={}),
            httpx.Response(200, json=OK),
        ]
    )
    client, seen = client_for(lambda r: next(answers), max_retries=2)
    result = await client.chat(model="m", messages=[{"role": "user", "content": "x"}])
    assert result.text == "hello" and len(seen) == 3
    assert result.latency_ms >= 50  # waited for Retry-After


async def test_backoff_never_outlives_the_budget() -> None:
    client, seen = client_for(
        lambda r: httpx.Response(503, json={}), max_retries=5, backoff_initial_s=5.0
    )
    with pytest.raises(ProviderUnavailable):
        await client.chat(model="m", messages=[{"role": "user", "content": "x"}], timeout_s=1.0)
    assert len(seen) == 1  # the first backoff would end past the deadline: give up at once


def test_key_is_not_in_repr() -> None:
    client, _ = client_for(lambda r: httpx.Response(200, json=OK))
    assert KEY not in repr(client) and KEY not in repr(vars(client))
