"""The simulated provider as agent CLIs use it: streamed SSE chunks with tool-call deltas
and a usage chunk carrying `cost`, content as text parts, and the case / repetition named
by the model proxy's headers (a CLI wraps the prompt in its own text)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from simulator import behaviour
from simulator.catalog import decider_case_hash
from simulator.server import CASE_HASH_HEADER, REP_HEADER
from tests.integration.test_provider_sim import KEY, Sim, sim  # noqa: F401 (fixture)

KILO_TOOLS = ["bash", "edit", "glob", "grep", "read", "write"]


def _tools(names: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in names
    ]


def _wrapped(prompt: str) -> list[dict[str, str]]:
    """The user turn as the Kilo CLI sends it: text parts, the prompt plus its own context."""
    return [
        {"type": "text", "text": prompt},
        {
            "type": "text",
            "text": "\n\n<environment_details>\ncwd: /workspace\n</environment_details>",
        },
    ]


def _reassemble(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold SSE chunks back into (message, chunks) the way an OpenAI client does."""
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e.removeprefix("data: ")) for e in events[:-1]]
    message: dict[str, Any] = {"content": "", "tool_calls": []}
    finish = None
    for c in chunks:
        for choice in c["choices"]:
            delta = choice["delta"]
            message["content"] += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                if "id" in tc:
                    message["tool_calls"].append(
                        {"id": tc["id"], "name": tc["function"]["name"], "arguments": ""}
                    )
                message["tool_calls"][tc["index"]]["arguments"] += tc["function"]["arguments"]
            finish = choice["finish_reason"] or finish
    message["finish_reason"] = finish
    return message, chunks


async def _post(server: Sim, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{server.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}", **headers},
        )


async def test_streamed_answer_equals_the_whole_answer_and_ends_with_usage_and_cost(
    sim: Sim,  # noqa: F811
) -> None:
    profile = sim.fleet.get("sim/frontier")
    assert profile is not None
    agentic = [c for c in sim.decider if behaviour.is_agentic(c)]
    checked = 0
    for case in agentic[:12]:
        rep = 0
        draw = behaviour.decider_draw(profile, decider_case_hash(case), case.tier, rep)
        if draw.failure is not None:
            continue
        headers = {CASE_HASH_HEADER: decider_case_hash(case), REP_HEADER: str(rep)}
        body = {
            "model": profile.id,
            "messages": [
                {"role": "system", "content": "You are Kilo."},
                {"role": "user", "content": _wrapped(case.prompt)},
            ],
            "tools": _tools(KILO_TOOLS),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        streamed = await _post(sim, body, headers)
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        message, chunks = _reassemble(streamed.content)
        whole = (await _post(sim, {**body, "stream": False}, headers)).json()
        want = whole["choices"][0]
        assert message["finish_reason"] == want["finish_reason"] == "tool_calls"
        assert [(t["id"], t["name"], t["arguments"]) for t in message["tool_calls"]] == [
            (t["id"], t["function"]["name"], t["function"]["arguments"])
            for t in want["message"]["tool_calls"]
        ]
        (call,) = message["tool_calls"]
        assert call["name"] == "bash"
        assert (orjson.loads(call["arguments"])["command"] == case.reference) == draw.correct
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        usage_chunk = chunks[-1]
        assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]
        assert usage_chunk["usage"]["cost"] > 0
        checked += 1
    assert checked >= 5


async def test_stream_without_usage_request_has_no_usage_chunk_and_text_streams_in_pieces(
    sim: Sim,  # noqa: F811
) -> None:
    case = next(c for c in sim.decider if behaviour.is_agentic(c))
    body = {
        "model": "sim/frontier",
        "messages": [{"role": "user", "content": _wrapped(case.prompt)}],
        "stream": True,
    }
    res = await _post(sim, body, {CASE_HASH_HEADER: decider_case_hash(case)})
    message, chunks = _reassemble(res.content)
    assert all(c["choices"] for c in chunks)
    assert message["finish_reason"] == "stop" and not message["tool_calls"]
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) >= 2
    assert message["content"].strip()


async def test_header_names_the_case_and_rep_so_reps_draw_independently(
    sim: Sim,  # noqa: F811
) -> None:
    profile = sim.fleet.get("sim/balanced")
    assert profile is not None
    case = next(c for c in sim.decider if behaviour.is_agentic(c))
    digest = decider_case_hash(case)
    for rep in range(6):
        draw = behaviour.decider_draw(profile, digest, case.tier, rep)
        if draw.failure is not None:
            continue
        body = {
            "model": profile.id,
            "messages": [{"role": "user", "content": _wrapped(case.prompt)}],
            "tools": _tools(["bash"]),
        }
        res = (await _post(sim, body, {CASE_HASH_HEADER: digest, REP_HEADER: str(rep)})).json()
        (call,) = res["choices"][0]["message"]["tool_calls"]
        command = orjson.loads(call["function"]["arguments"])["command"]
        assert (command == case.reference) == draw.correct, rep
