"""Test doubles shared by the harness tests: a scripted LLM provider and its replies."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from contracts.cases import FINAL_ANSWER_INSTRUCTION, DeciderCase


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: dict[str, Any]
    arguments_error: str | None = None


@dataclass(frozen=True)
class Reply:
    text: str | None
    tool_calls: list[Call] = field(default_factory=list)
    cost_usd: float | None = 0.001
    latency_ms: float = 5.0

    @property
    def assistant_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in self.tool_calls
            ]
        return msg


class ScriptedProvider:
    """Stands in for the LLM: returns canned replies in order, records every request.

    Holds `api_key` like a real client would, so secret-leak tests can plant one.
    """

    def __init__(
        self,
        script: list[Reply | BaseException],
        delay_s: float = 0.0,
        api_key: SecretStr | None = None,
    ) -> None:
        self.script = list(script)
        self.delay_s = delay_s
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        reasoning_effort: str | None = None,
        timeout_s: float | None = None,
        seed: int | None = None,
    ) -> Reply:
        self.requests.append(
            {
                "model": model,
                "messages": json.loads(json.dumps(messages)),
                "tools": tools,
                "reasoning_effort": reasoning_effort,
                "timeout_s": timeout_s,
                "seed": seed,
            }
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        item = self.script.pop(0) if self.script else Reply("", cost_usd=None)
        if isinstance(item, BaseException):
            raise item
        return item


def sum_numbers_case(**update: Any) -> DeciderCase:
    """A small agentic case both harness suites run: sum the numbers in a workspace file."""
    case = DeciderCase(
        id="agentic_execution-data_processing-sum-numbers",
        taskType="agentic_execution",
        subtaskType="data_processing",
        tier="low",
        prompt=f"Sum the numbers in data/nums.txt. {FINAL_ANSWER_INSTRUCTION}",
        check={"kind": "exact", "expected": "6"},
        golden_answer="6",
        files={"data/nums.txt": "1\n2\n3\n"},
        timeout_s=30,
        reference="awk '{s+=$1} END {print s}' data/nums.txt",
    )
    return case.model_copy(update=update) if update else case
