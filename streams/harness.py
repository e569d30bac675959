"""Agent harnesses: how a model works a decider case inside a sandbox.

`BuiltinHarness` runs a bounded tool-using loop in the worker against the provider client;
every tool call executes in the job's sandbox (which has no network and no credential). The
`Harness` protocol is the seam for other harnesses, e.g. a command-template harness that
runs a third-party agent CLI inside the container and parses its output.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from contracts.cases import DeciderCase
from contracts.config import HarnessName
from infra.provider.errors import ProviderTimeout
from infra.provider.protocol import ChatProvider, ToolCallView
from streams.sandbox import Sandbox, SandboxError, redact

log = logging.getLogger(__name__)

StopReason = Literal["final", "empty", "max_steps", "timeout", "error"]
"""final: the model answered with text; empty: it answered without text (after the retry);
max_steps: the step budget ran out mid-work; timeout: the case's wall-clock ran out (or the
provider died); error: an agent CLI ended with an error of its own."""


# ------------------------------------------------------------------ harness protocol


@dataclass(frozen=True, slots=True)
class HarnessResult:
    """What one (model, case, rep) produced; the worker grades `answer` and emits events."""

    answer: str
    """The final answer text ("" when there is none: timeout, step budget, empty)."""
    cost_usd: float | None
    """Sum over every model call of every attempt; None when no call reported a cost."""
    latency_ms: float
    """Wall-clock of the whole case (all attempts, model calls and tool executions)."""
    timed_out: bool
    steps: int
    """Model calls made, over all attempts."""
    stop_reason: StopReason
    transcript_tail: str
    """The last few turns, abbreviated and redacted, for diagnostics."""
    attempts: int
    """1, or 2 when an empty answer was retried."""
    model_latency_ms: float = 0.0
    """Sum of the provider-reported latencies (the model's own share of `latency_ms`)."""
    tool_calls: int = 0
    """Tool calls that reached the sandbox (all attempts)."""
    tool_exec_ms: float = 0.0
    """Sum of the in-container durations of the shell commands the tools ran, as the
    sandbox reports them (`ExecResult.duration_ms`): the task's own work."""
    tool_wall_ms: float = 0.0
    """Host wall-clock of every tool call that reached the sandbox (shell commands, reads,
    writes); `tool_wall_ms - tool_exec_ms` is the sandbox transport cost."""
    reset_ms: float = 0.0
    """Host wall-clock of the workspace resets (one per attempt)."""
    harness: HarnessName = "builtin"
    cli_ms: float = 0.0
    """Agent CLIs: wall-clock of the CLI processes in the container (all attempts)."""
    first_call_ms: float = 0.0
    """Agent CLIs: from the case's start to the CLI's first model call (its start-up,
    after the workspace reset)."""
    proxy_calls: tuple[dict[str, Any], ...] = ()
    """Agent CLIs: every call the model proxy saw (`ProxyCall.to_dict()`), in order."""
    cli_runs: tuple[dict[str, Any], ...] = ()
    """Agent CLIs: what each CLI run printed (event stream, redacted stderr, exit)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def diagnostics(self, value_max: int = 500) -> dict[str, str]:
        """Short facts for a graded case's `diagnostics` (each value at most `value_max`)."""
        return {
            "harness": self.harness,
            "stop_reason": self.stop_reason,
            "steps": str(self.steps),
            "attempts": str(self.attempts),
            "model_latency_ms": f"{self.model_latency_ms:.0f}",
            "tool_calls": str(self.tool_calls),
            "tool_exec_ms": f"{self.tool_exec_ms:.1f}",
            "tool_wall_ms": f"{self.tool_wall_ms:.1f}",
            "reset_ms": f"{self.reset_ms:.1f}",
            "transcript_tail": self.transcript_tail[-value_max:],
        }


class Harness(Protocol):
    async def run_case(
        self,
        case: DeciderCase,
        sandbox: Sandbox,
        *,
        model: str,
        reasoning_effort: str | None,
        rep: int,
    ) -> HarnessResult:
        """Work `case` in `sandbox` (started, shared by the job's cases, used serially)."""
        ...


class HarnessError(RuntimeError):
    """The model provider failed (not a wrong answer): the job is retried, then dead-lettered.

    Its message is redacted and it never chains the provider's exception, whose text may
    carry request details.
    """

    def __init__(self, message: str, transcript_tail: str = "") -> None:
        super().__init__(message)
        self.transcript_tail = transcript_tail


# ------------------------------------------------------------------ built-in harness

SYSTEM_PROMPT = (
    "You are an expert software engineer working on a task inside a sandboxed Linux "
    "workspace (the current directory, /workspace). You have tools: read_file, write_file, "
    "list_dir and run_shell (bash with coreutils, grep, sed, awk, jq and python3; no network "
    "access). Paths are relative to the workspace. Use the tools to inspect files and run "
    "commands rather than guessing, and verify your result. When you are done, reply "
    "without calling any tool, with your final answer alone on the last line."
)


def _fn(name: str, description: str, props: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": "string", "description": v} for k, v in props.items()},
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_SANDBOX_TOOLS = frozenset({"read_file", "write_file", "list_dir", "run_shell"})
"""The tools that reach the sandbox (their host wall time is measured)."""

TOOLS: list[dict[str, Any]] = [
    _fn(
        "read_file",
        "Read a text file.",
        {"path": "File path, relative to the workspace."},
        ["path"],
    ),
    _fn(
        "write_file",
        "Create or overwrite a text file (parent directories are created).",
        {"path": "File path, relative to the workspace.", "content": "The full file content."},
        ["path", "content"],
    ),
    _fn(
        "list_dir",
        "List a directory (ls -la).",
        {"path": "Directory, relative to the workspace ('.' for the workspace itself)."},
        ["path"],
    ),
    _fn(
        "run_shell",
        "Run a bash command in the workspace and return its exit code, stdout and stderr.",
        {"command": "The bash command line."},
        ["command"],
    ),
]


@dataclass(slots=True)
class _SandboxTime:
    """Where a case's sandbox time went (accumulated over attempts, kept on timeout)."""

    tool_calls: int = 0
    tool_exec_ms: float = 0.0
    tool_wall_ms: float = 0.0
    reset_ms: float = 0.0


@dataclass(slots=True)
class _Attempt:
    answer: str
    stop_reason: StopReason
    steps: int
    costs: list[float | None]
    model_latency_ms: float


class BuiltinHarness:
    """Bounded tool loop: model call -> tool calls run in the sandbox -> ... -> final text."""

    def __init__(
        self,
        provider: ChatProvider,
        max_steps: int = 12,
        *,
        tool_timeout_s: float = 60.0,
        max_tool_output: int = 8000,
        transcript_chars: int = 2000,
        redact: Iterable[str] = (),
        call_timeout_s: float | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self.provider = provider
        self.max_steps = max_steps
        self.call_timeout_s = call_timeout_s
        """Cap of one model call; a call that hits it counts as the model timing out."""
        self.tool_timeout_s = tool_timeout_s
        self.max_tool_output = max_tool_output
        self.transcript_chars = transcript_chars
        self.secrets = tuple(s for s in redact if s)
        """Secret values (e.g. the provider key) scrubbed from everything the harness emits."""
        self.system_prompt = system_prompt

    async def run_case(
        self,
        case: DeciderCase,
        sandbox: Sandbox,
        *,
        model: str,
        reasoning_effort: str | None,
        rep: int,
    ) -> HarnessResult:
        t0 = time.perf_counter()
        tail: deque[str] = deque(maxlen=40)
        costs: list[float | None] = []
        steps = 0
        model_latency = 0.0
        attempt: _Attempt | None = None
        timed_out = False
        attempts = 0
        timing = _SandboxTime()
        for attempts in (1, 2):
            if attempts > 1:
                tail.append("-- empty answer: retrying the case once from scratch --")
            try:
                async with asyncio.timeout(case.timeout_s):
                    attempt = await self._attempt(
                        case,
                        sandbox,
                        model,
                        reasoning_effort,
                        rep,
                        tail,
                        costs,
                        timing,
                        retry=attempts > 1,
                    )
            except TimeoutError:
                timed_out = True
                tail.append(f"-- case timed out after {case.timeout_s}s --")
                attempt = None
            steps = len(costs)
            if attempt is not None:
                model_latency += attempt.model_latency_ms
            if attempt is None or attempt.stop_reason != "empty":
                break

        known = [c for c in costs if c is not None]
        result = HarnessResult(
            answer=self._clean(attempt.answer) if attempt else "",
            cost_usd=sum(known) if known else None,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            timed_out=timed_out,
            steps=steps,
            stop_reason="timeout" if attempt is None else attempt.stop_reason,
            transcript_tail=self._tail(tail),
            attempts=attempts,
            model_latency_ms=model_latency,
            tool_calls=timing.tool_calls,
            tool_exec_ms=timing.tool_exec_ms,
            tool_wall_ms=timing.tool_wall_ms,
            reset_ms=timing.reset_ms,
        )
        log.info(
            "case %s model %s rep %d: %s after %d steps, %d attempt(s), %.0f ms",
            case.id,
            model,
            rep,
            result.stop_reason,
            result.steps,
            result.attempts,
            result.latency_ms,
        )
        return result

    # ------------------------------------------------------------------ one attempt

    async def _attempt(
        self,
        case: DeciderCase,
        sandbox: Sandbox,
        model: str,
        reasoning_effort: str | None,
        rep: int,
        tail: deque[str],
        costs: list[float | None],
        timing: _SandboxTime | None = None,
        *,
        retry: bool = False,
    ) -> _Attempt:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + case.timeout_s
        timing = timing if timing is not None else _SandboxTime()
        # A fresh workspace per attempt: the job's earlier cases (and a failed first
        # attempt) leave nothing behind for this one to see. A retry follows a first
        # attempt that ran to its end, so the sandbox's pristine copy is this case's files:
        # restored in the sandbox without sending them again.
        t_reset = time.perf_counter()
        try:
            await sandbox.reset(None if retry else case.files)
        finally:
            timing.reset_ms += (time.perf_counter() - t_reset) * 1000.0
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": case.prompt},
        ]
        model_latency = 0.0
        first = len(costs)
        while len(costs) - first < self.max_steps:
            try:
                res = await self.provider.chat(
                    model=model,
                    messages=messages,
                    tools=TOOLS,
                    reasoning_effort=reasoning_effort,
                    timeout_s=self._call_budget(deadline - loop.time()),
                    seed=rep,
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if deadline - loop.time() <= 0.5 or isinstance(e, ProviderTimeout):
                    # A model that does not answer in time is a timed-out case (graded 0),
                    # not a failed job: retrying would hang the same way.
                    raise TimeoutError from None
                msg = self._clean(f"provider call failed: {type(e).__name__}: {e}")
                tail.append(msg)
                raise HarnessError(msg, self._tail(tail)) from None
            costs.append(res.cost_usd)
            model_latency += float(res.latency_ms or 0.0)
            if res.text:
                tail.append(f"assistant: {_abbrev(res.text, 400)}")
            if res.tool_calls:
                messages.append(res.assistant_message)
                for call in res.tool_calls:
                    tail.append(f"tool {call.name}({_abbrev(repr(dict(call.arguments)), 200)})")
                    remaining = deadline - loop.time()
                    output = await self._run_tool(call, sandbox, remaining, timing)
                    tail.append(f"  -> {_abbrev(output, 300)}")
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
                continue
            text = res.text or ""
            reason: StopReason = "final" if text.strip() else "empty"
            if reason == "empty":
                tail.append("assistant: <no text>")
            return _Attempt(text.strip(), reason, len(costs) - first, costs[first:], model_latency)
        tail.append(f"-- step budget of {self.max_steps} model calls exhausted --")
        return _Attempt("", "max_steps", len(costs) - first, costs[first:], model_latency)

    # ------------------------------------------------------------------ tools

    def _call_budget(self, remaining_s: float) -> float:
        budget = max(remaining_s, 0.1)
        return min(budget, self.call_timeout_s) if self.call_timeout_s else budget

    async def _run_tool(
        self,
        call: ToolCallView,
        sandbox: Sandbox,
        remaining_s: float,
        timing: _SandboxTime | None = None,
    ) -> str:
        args = call.arguments if isinstance(call.arguments, Mapping) else {}
        bad_args = getattr(call, "arguments_error", None)
        if bad_args:
            return self._cap(f"error: could not parse the arguments of {call.name}: {bad_args}")
        if timing is None or call.name not in _SANDBOX_TOOLS:
            return await self._dispatch_tool(call, args, sandbox, remaining_s, timing)
        t0 = time.perf_counter()
        try:
            return await self._dispatch_tool(call, args, sandbox, remaining_s, timing)
        finally:
            timing.tool_calls += 1
            timing.tool_wall_ms += (time.perf_counter() - t0) * 1000.0

    async def _dispatch_tool(
        self,
        call: ToolCallView,
        args: Mapping[str, Any],
        sandbox: Sandbox,
        remaining_s: float,
        timing: _SandboxTime | None,
    ) -> str:
        try:
            if call.name == "read_file":
                text = await sandbox.read_file(_workspace_path(_arg(args, "path")))
                return self._cap(text)
            if call.name == "write_file":
                path = _workspace_path(_arg(args, "path"))
                if path.startswith("/"):
                    return "error: write_file paths must be inside the workspace"
                content = _arg(args, "content", allow_empty=True)
                await sandbox.write_files({path: content})
                return f"wrote {len(content.encode('utf-8'))} bytes to {path}"
            if call.name == "list_dir":
                path = _workspace_path(str(args.get("path") or "."))
                res = await sandbox.exec(f"ls -la -- {shlex.quote(path)}", timeout_s=15)
                if timing is not None:
                    timing.tool_exec_ms += res.duration_ms
                if res.exit_code != 0:
                    return self._cap(f"error: {res.stderr.strip() or 'cannot list'}")
                return self._cap(res.stdout)
            if call.name == "run_shell":
                command = _arg(args, "command")
                timeout = max(min(self.tool_timeout_s, remaining_s), 1.0)
                res = await sandbox.exec(command, timeout_s=timeout)
                if timing is not None:
                    timing.tool_exec_ms += res.duration_ms
                head = (
                    f"timed out after {timeout:.0f}s (process group killed)"
                    if res.timed_out
                    else f"exit_code: {res.exit_code}"
                )
                return self._cap(f"{head}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
            known = ", ".join(t["function"]["name"] for t in TOOLS)
            return f"error: unknown tool {call.name!r}; use one of: {known}"
        except SandboxError:
            raise  # the sandbox broke: not the model's doing
        except (ValueError, TypeError, OSError) as e:
            return self._cap(f"error: {e}")

    # ------------------------------------------------------------------ text hygiene

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def _cap(self, text: str) -> str:
        text = self._clean(text)
        if len(text) <= self.max_tool_output:
            return text
        half = self.max_tool_output // 2
        return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"

    def _tail(self, tail: Iterable[str]) -> str:
        return self._clean("\n".join(tail))[-self.transcript_chars :]


async def fresh_workspace(sandbox: Sandbox, files: Mapping[str, str]) -> None:
    """An empty workspace holding only `files` (a case's setup, before each attempt): the
    sandbox resets it in one call, inside the container."""
    await sandbox.reset(files)


def _arg(args: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = args.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ValueError(f"missing string argument {key!r}")
    return value


def _workspace_path(path: str) -> str:
    """Accept `/workspace/x` (models often write absolute paths) as the relative `x`."""
    path = path.strip()
    if path in ("/workspace", "/workspace/"):
        return "."
    if path.startswith("/workspace/"):
        return path[len("/workspace/") :]
    return path


def _abbrev(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."
