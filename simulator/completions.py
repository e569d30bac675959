"""A simulated chat completion, whole (`completion_response`) or streamed as OpenAI
`chat.completion.chunk` SSE events (`sse_events`).

Agent CLIs (the Kilo CLI through the AI SDK) only ever stream. A completion answered as a
whole (`server.completion_response`) is cut into the chunks a real OpenAI-compatible
endpoint sends, so both forms always carry the same content, tool calls and usage:

1. a first delta with `role` (and no content);
2. `content` fragments;
3. per tool call, a first fragment `{index, id, type, function: {name, arguments: ""}}`,
   then `index` + argument fragments;
4. a chunk with an empty delta and the `finish_reason`;
5. when asked (`stream_options.include_usage`, or OpenRouter's `usage.include`), a final
   chunk with `choices: []` and `usage` (with `cost`);
6. `data: [DONE]`.

"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from infra.provider.pricing import token_cost
from simulator import behaviour
from simulator.behaviour import Plan
from simulator.fleet import ModelProfile

FINGERPRINT: Final = "provenroute-simulated"
CONTENT_FRAGMENT: Final = 48
"""Characters per content fragment (small enough that clients really reassemble)."""
ARGUMENT_FRAGMENT: Final = 64


def message_text(content: Any) -> str:
    """A message's content as text: a string, or the text of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def prompt_chars(messages: list[Any], tools: Any) -> int:
    total = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        total += len(message_text(m.get("content")))
        for call in m.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                total += len(str(call["function"].get("arguments", "")))
    if tools:
        total += len(orjson.dumps(tools))
    return total


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether a streaming request asked for the usage chunk."""
    options = body.get("stream_options")
    usage = body.get("usage")
    return bool(
        (isinstance(options, dict) and options.get("include_usage"))
        or (isinstance(usage, dict) and usage.get("include"))
    )


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def completion_chunks(
    completion: dict[str, Any], *, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The chunks of `completion` (a non-streaming `chat.completion` object), in order."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": completion.get("system_fingerprint"),
        "simulated": True,
    }
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        for piece in _pieces(text, CONTENT_FRAGMENT):
            yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": ""},
                    }
                ]
            }
        )
        for piece in _pieces(fn["arguments"], ARGUMENT_FRAGMENT):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield {**base, "choices": [], "usage": completion["usage"]}


def sse_events(completion: dict[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """`completion` as SSE `data:` events, ending with `data: [DONE]`."""
    for c in completion_chunks(completion, include_usage=include_usage):
        yield b"data: " + orjson.dumps(c) + b"\n\n"
    yield b"data: [DONE]\n\n"


@dataclass(frozen=True)
class _CallJson:
    id: str
    name: str
    arguments_json: str


def _calls_json(plan: Plan) -> list[_CallJson]:
    return [_CallJson(c.id, c.name, orjson.dumps(c.arguments).decode()) for c in plan.tool_calls]


def completion_response(
    profile: ModelProfile, body: dict[str, Any], plan: Plan, digest: str, rep: int, step: int
) -> dict[str, Any]:
    text = plan.text
    finish = "tool_calls" if plan.tool_calls else "stop"
    max_tokens = body.get("max_tokens")
    if (
        isinstance(text, str)
        and isinstance(max_tokens, int)
        and max_tokens > 0
        and behaviour.estimate_tokens(text) > max_tokens
    ):
        text, finish = text[: max_tokens * 4], "length"
    tool_calls: list[dict[str, Any]] = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments_json},
        }
        for c in _calls_json(plan)
    ]
    out_chars = len(text or "") + sum(len(c.arguments_json) for c in _calls_json(plan))
    prompt_tokens = max(1, math.ceil(prompt_chars(body["messages"], body.get("tools")) / 4))
    completion_tokens = math.ceil(out_chars / 4)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if profile.report_cost:
        usage["cost"] = token_cost(
            prompt_tokens,
            completion_tokens,
            profile.price.input_per_mtok,
            profile.price.output_per_mtok,
        )
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    rid = hashlib.sha256(f"{profile.id}|{digest}|{rep}|{step}".encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-sim-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": profile.id,
        "provider": "provenroute-simulated",
        "system_fingerprint": FINGERPRINT,
        "simulated": True,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
    }
