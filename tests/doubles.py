"""Test doubles shared by the harness and verification tests: a scripted LLM provider and its
replies, and a local-subprocess sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from contracts.cases import FINAL_ANSWER_INSTRUCTION, DeciderCase
from streams.sandbox import RESET_WORKSPACE, ExecResult, SandboxError


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


UNDELETABLE = "undeletable"
"""A file `LocalSandbox` refuses to wipe: stands in for files the sandbox user cannot remove
(tests may run as root)."""


class LocalSandbox:
    """A temp directory and bash: the sandbox contract without a container. Tests only.

    Records every command and every write, so tests can see what reached the workspace.
    """

    instances: ClassVar[list[LocalSandbox]] = []

    def __init__(self, index: int = 0, *, fail_start: bool = False) -> None:
        self.index = index
        self.fail_start = fail_start
        self.workspace: Path | None = None
        self.commands: list[str] = []
        self.writes: list[dict[str, str]] = []
        self.pristine: dict[str, str] = {}
        self.closed = False
        LocalSandbox.instances.append(self)

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("container would not start")
        self.workspace = Path(tempfile.mkdtemp(prefix="verify-ws-"))

    async def write_files(self, files: Mapping[str, str]) -> None:
        assert self.workspace is not None
        self.writes.append(dict(files))
        for rel, text in files.items():
            path = self.workspace / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    async def read_file(self, path: str) -> str:
        assert self.workspace is not None
        return (self.workspace / path).read_text()

    async def reset(self, files: Mapping[str, str] | None = None) -> None:
        """The contract's reset: empty the workspace, then write `files` (the new pristine
        copy) or restore the last one."""
        if files is not None:
            self.pristine = dict(files)
        res = await self.exec(RESET_WORKSPACE, 30.0)
        if res.exit_code != 0:
            raise SandboxError(f"could not reset the workspace: {res.stderr[-300:]}")
        if self.pristine:
            await self.write_files(self.pristine)

    async def exec(
        self,
        cmd: str,
        timeout_s: float,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        assert self.workspace is not None and not self.closed
        self.commands.append(cmd)
        t0 = time.perf_counter()
        if cmd.startswith("find . -mindepth 1 -delete") and (self.workspace / UNDELETABLE).exists():
            return ExecResult(1, "", f"find: cannot delete '{UNDELETABLE}'", False, 1.0, False)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            cmd,
            cwd=self.workspace,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        data = stdin.encode() if stdin is not None else None
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout_s)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return ExecResult(None, "", "", True, timeout_s * 1000.0, False)
        code = proc.returncode
        # report death by signal N as 128+N, like the container's runner
        code = 128 - code if code is not None and code < 0 else code
        ms = (time.perf_counter() - t0) * 1000.0
        return ExecResult(code, out.decode(), err.decode(), False, ms, False)

    async def close(self) -> None:
        self.closed = True
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)

    async def __aenter__(self) -> LocalSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
