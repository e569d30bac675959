"""The built-in agent harness loop, against a scripted provider and an in-memory sandbox."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from streams.harness import TOOLS, BuiltinHarness, HarnessError
from streams.sandbox import ExecResult, Sandbox, redact
from tests.doubles import Call, Reply, ScriptedProvider
from tests.doubles import sum_numbers_case as make_case

# ------------------------------------------------------------------ test doubles


def tools(*calls: tuple[str, dict[str, Any]], cost: float | None = 0.001) -> Reply:
    return Reply(None, [Call(f"call_{i}", n, a) for i, (n, a) in enumerate(calls)], cost)


class MemorySandbox:
    """In-memory workspace; `exec` is answered by a handler (default: a few fake commands)."""

    def __init__(self, handler: Callable[[str], ExecResult] | None = None) -> None:
        self.files: dict[str, str] = {}
        self.pristine: dict[str, str] = {}
        self.commands: list[str] = []
        self.writes: list[dict[str, str]] = []
        self.resets: list[dict[str, str] | None] = []
        self.handler = handler

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> MemorySandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def write_files(self, files: Mapping[str, str]) -> None:
        self.writes.append(dict(files))
        self.files.update(files)

    async def read_file(self, path: str) -> str:
        if path not in self.files:
            raise FileNotFoundError(f"no such file: {path}")
        return self.files[path]

    async def reset(self, files: Mapping[str, str] | None = None) -> None:
        self.resets.append(None if files is None else dict(files))
        if files is not None:
            self.pristine = dict(files)
        self.files = dict(self.pristine)

    async def exec(
        self,
        cmd: str,
        timeout_s: float,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        self.commands.append(cmd)
        if self.handler is not None:
            return self.handler(cmd)
        if cmd.startswith("ls -la"):
            return ExecResult(0, "\n".join(sorted(self.files)), "", False, 1.0, False)
        return ExecResult(0, f"ran: {cmd}\n", "", False, 1.0, False)


async def run(
    provider: ScriptedProvider, sandbox: Sandbox | None = None, **kw: Any
) -> tuple[Any, MemorySandbox | Sandbox]:
    sb = sandbox or MemorySandbox()
    case = kw.pop("case", make_case())
    harness = BuiltinHarness(provider, **kw)
    result = await harness.run_case(case, sb, model="sim/correct", reasoning_effort="low", rep=3)
    return result, sb


# ------------------------------------------------------------------ tests


def test_tool_schemas_have_the_agreed_names_and_arguments() -> None:
    shapes = {
        t["function"]["name"]: sorted(t["function"]["parameters"]["properties"]) for t in TOOLS
    }
    assert shapes == {
        "read_file": ["path"],
        "write_file": ["content", "path"],
        "list_dir": ["path"],
        "run_shell": ["command"],
    }
    assert all(t["type"] == "function" for t in TOOLS)


async def test_tool_loop_reaches_a_final_answer() -> None:
    provider = ScriptedProvider(
        [
            tools(("read_file", {"path": "data/nums.txt"}), cost=0.01),
            tools(("run_shell", {"command": "awk '{s+=$1} END {print s}' data/nums.txt"})),
            Reply("The sum is:\n6", cost_usd=0.02),
        ]
    )
    result, sb = await run(provider)
    assert result.answer == "The sum is:\n6"
    assert result.stop_reason == "final"
    assert (result.steps, result.attempts, result.timed_out) == (3, 1, False)
    assert result.cost_usd == pytest.approx(0.031)
    assert result.model_latency_ms == pytest.approx(15.0)
    assert isinstance(sb, MemorySandbox)
    assert sb.resets == [{"data/nums.txt": "1\n2\n3\n"}]  # the case's files, before the loop
    assert sb.commands == ["awk '{s+=$1} END {print s}' data/nums.txt"]

    first, third = provider.requests[0], provider.requests[2]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][1]["content"] == make_case().prompt  # exactly the prompt
    assert {r["seed"] for r in provider.requests} == {3}
    assert {r["reasoning_effort"] for r in provider.requests} == {"low"}
    assert all(r["tools"] == TOOLS for r in provider.requests)
    roles = [m["role"] for m in third["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    tool_msg = third["messages"][3]
    assert tool_msg == {"role": "tool", "tool_call_id": "call_0", "content": "1\n2\n3\n"}
    assert "exit_code: 0" in third["messages"][5]["content"]
    assert "read_file" in result.transcript_tail and "6" in result.transcript_tail


async def test_empty_answer_is_retried_once_from_scratch_and_costs_are_summed() -> None:
    provider = ScriptedProvider(
        [
            tools(("write_file", {"path": "scratch.txt", "content": "x"}), cost=0.01),
            Reply("", cost_usd=0.02),  # exit 0, no text
            Reply("6", cost_usd=0.04),
        ]
    )
    result, sb = await run(provider)
    assert isinstance(sb, MemorySandbox)
    assert result.answer == "6"
    assert result.attempts == 2
    assert result.stop_reason == "final"
    assert result.cost_usd == pytest.approx(0.07)
    assert result.steps == 3
    # a fresh workspace before each attempt; the retry restores the pristine copy
    assert sb.resets == [{"data/nums.txt": "1\n2\n3\n"}, None]
    assert "scratch.txt" not in sb.files
    assert sb.files == {"data/nums.txt": "1\n2\n3\n"}
    # the retry is a fresh conversation
    assert [m["role"] for m in provider.requests[2]["messages"]] == ["system", "user"]


async def test_two_empty_answers_stop_as_empty() -> None:
    provider = ScriptedProvider([Reply(None, cost_usd=0.01), Reply("  \n", cost_usd=0.01)])
    result, _ = await run(provider)
    assert (result.answer, result.stop_reason, result.attempts) == ("", "empty", 2)
    assert result.cost_usd == pytest.approx(0.02)
    assert len(provider.requests) == 2  # retried once, not more


async def test_cost_is_none_without_any_cost_signal() -> None:
    result, _ = await run(ScriptedProvider([Reply("6", cost_usd=None)]))
    assert result.cost_usd is None


async def test_step_budget_is_bounded() -> None:
    provider = ScriptedProvider([tools(("list_dir", {"path": "."})) for _ in range(20)])
    result, _ = await run(provider, max_steps=4)
    assert (result.stop_reason, result.steps, result.answer) == ("max_steps", 4, "")
    assert len(provider.requests) == 4
    assert result.attempts == 1


async def test_case_wall_clock_timeout() -> None:
    provider = ScriptedProvider([tools(("list_dir", {"path": "."}))] * 50, delay_s=0.05)
    case = make_case().model_copy(update={"timeout_s": 0.3})
    result, _ = await run(provider, case=case)
    assert result.timed_out and result.stop_reason == "timeout"
    assert result.answer == ""
    assert result.latency_ms < 1000
    assert result.steps >= 2 and result.cost_usd is not None  # calls made before it count


async def test_tool_errors_go_back_to_the_model() -> None:
    provider = ScriptedProvider(
        [
            Reply(
                None,
                [
                    Call("a", "read_file", {"path": "missing.txt"}),
                    Call("b", "delete_everything", {}),
                    Call("c", "run_shell", {}),
                    Call("d", "write_file", {"path": "/etc/passwd", "content": "x"}),
                    Call("e", "run_shell", {}, arguments_error="Expecting value: line 1"),
                    Call("f", "write_file", {"path": "/workspace/out/r.txt", "content": "ok"}),
                    Call("g", "read_file", {"path": "/workspace/out/r.txt"}),
                ],
            ),
            Reply("6"),
        ]
    )
    result, sb = await run(provider)
    assert result.answer == "6"
    contents = {m["tool_call_id"]: m["content"] for m in provider.requests[1]["messages"][3:]}
    assert contents["a"].startswith("error: no such file")
    assert "unknown tool 'delete_everything'" in contents["b"]
    assert "missing string argument 'command'" in contents["c"]
    assert "inside the workspace" in contents["d"]
    assert "could not parse the arguments" in contents["e"]
    assert contents["f"] == "wrote 2 bytes to out/r.txt"
    assert contents["g"] == "ok"
    assert isinstance(sb, MemorySandbox) and sb.files["out/r.txt"] == "ok"


async def test_tool_output_is_capped() -> None:
    big = ExecResult(0, "x" * 50_000, "", False, 1.0, True)
    provider = ScriptedProvider([tools(("run_shell", {"command": "yes"})), Reply("6")])
    await run(provider, MemorySandbox(lambda _cmd: big), max_tool_output=1000)
    content = provider.requests[1]["messages"][3]["content"]
    assert len(content) < 1100 and "characters cut" in content


async def test_timed_out_command_is_reported_to_the_model() -> None:
    killed = ExecResult(None, "partial", "", True, 1000.0, False)
    provider = ScriptedProvider([tools(("run_shell", {"command": "sleep 999"})), Reply("6")])
    await run(provider, MemorySandbox(lambda _cmd: killed))
    assert "timed out" in provider.requests[1]["messages"][3]["content"]


async def test_provider_failure_raises_a_redacted_error(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-0123456789abcdef"
    provider = ScriptedProvider(
        [
            tools(("list_dir", {"path": "."})),
            RuntimeError(f"401 Unauthorized: invalid key {secret}"),
        ]
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HarnessError) as info:
        await run(provider, redact=[secret])
    err = info.value
    assert secret not in str(err) and secret not in err.transcript_tail
    assert "[REDACTED]" in str(err)
    assert err.__cause__ is None and err.__suppress_context__
    assert secret not in caplog.text


async def test_secrets_are_scrubbed_from_answer_and_transcript() -> None:
    secret = "sk-live-0123456789abcdef"
    provider = ScriptedProvider(
        [tools(("run_shell", {"command": f"echo {secret}"})), Reply(f"key {secret}\n6")]
    )
    result, _ = await run(provider, redact=[secret])
    dumped = json.dumps(result.to_dict())
    assert secret not in dumped
    assert result.answer.endswith("6")


def test_redact_ignores_tiny_values_and_prefers_longest() -> None:
    assert redact("abc sk-1234 sk-12345", ["sk-12345", "sk-1234", "a"]) == (
        "abc [REDACTED] [REDACTED]"
    )


async def test_a_model_call_timing_out_is_a_timed_out_case_not_a_failed_job() -> None:
    from infra.provider.errors import ProviderTimeout

    provider = ScriptedProvider(
        [tools(("list_dir", {"path": "."})), ProviderTimeout("hung", model="sim/correct")]
    )
    result, _ = await run(provider, call_timeout_s=5.0)
    assert result.timed_out and result.stop_reason == "timeout"
    assert result.answer == ""
    assert result.attempts == 1  # a hang is not an empty answer: no retry
    assert all(r["timeout_s"] <= 5.0 for r in provider.requests)  # each call is capped
