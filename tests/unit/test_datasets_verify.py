"""Reference verification logic, run against a local-subprocess sandbox (no Docker)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from contracts.cases import (
    FINAL_ANSWER_INSTRUCTION,
    ContainsAllCheck,
    DeciderCase,
    ExactCheck,
    JsonEqualCheck,
    RegexCheck,
)
from contracts.decider_grading import run_check
from contracts.sandbox import RESET_WORKSPACE
from datasets.verify import (
    CaseVerdict,
    judge,
    last_nonempty_line,
    verify_cases,
)


@dataclass(frozen=True)
class LocalResult:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool


class LocalSandbox:
    """A temp directory and bash: the sandbox contract without a container. Tests only."""

    instances: ClassVar[list[LocalSandbox]] = []

    def __init__(self, index: int, *, fail_start: bool = False) -> None:
        self.index = index
        self.fail_start = fail_start
        self.workspace: Path | None = None
        self.commands: list[str] = []
        self.closed = False
        LocalSandbox.instances.append(self)

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("container would not start")
        self.workspace = Path(tempfile.mkdtemp(prefix="verify-ws-"))

    async def write_files(self, files: Mapping[str, str]) -> None:
        assert self.workspace is not None
        for rel, text in files.items():
            path = self.workspace / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    async def exec(
        self,
        cmd: str,
        timeout_s: float,
        *,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> LocalResult:
        assert self.workspace is not None and not self.closed
        self.commands.append(cmd)
        if cmd == RESET_WORKSPACE and (self.workspace / "undeletable").exists():
            # stands in for files the sandbox user cannot remove (tests may run as root)
            return LocalResult(1, "", "find: cannot delete 'undeletable'", False)
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
            return LocalResult(None, "", "", True)
        code = proc.returncode
        # report death by signal N as 128+N, like the container's runner
        code = 128 - code if code is not None and code < 0 else code
        return LocalResult(code, out.decode(), err.decode(), False)

    async def close(self) -> None:
        self.closed = True
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)


@pytest.fixture(autouse=True)
def _reset_instances() -> None:
    LocalSandbox.instances = []


def case(
    topic: str,
    *,
    reference: str | None,
    check: Any = None,
    golden: str = "42",
    files: dict[str, str] | None = None,
    timeout_s: int = 10,
) -> DeciderCase:
    """An agentic case when it has a reference, a plain debugging question otherwise."""
    task, sub = ("agentic_execution", "shell_automation") if reference else ("debugging", "bug_fix")
    return DeciderCase(
        id=f"{task}-{sub}-{topic}",
        taskType=task,
        subtaskType=sub,
        tier="low",
        prompt=f"Do it. {FINAL_ANSWER_INSTRUCTION}",
        check=check or ExactCheck(expected="42"),
        golden_answer=golden,
        files=(files if files is not None else {"in.txt": "42\n"}) if reference else {},
        timeout_s=timeout_s,
        reference=reference,
    )


def run(cases: list[DeciderCase], jobs: int = 2, **kw: Any) -> list[CaseVerdict]:
    seen: list[CaseVerdict] = []
    verdicts = asyncio.run(
        verify_cases(
            cases,
            lambda i: LocalSandbox(i, **kw),
            run_check,
            jobs=jobs,
            on_result=seen.append,
        )
    )
    assert sorted(v.case_id for v in seen) == sorted(v.case_id for v in verdicts)
    return verdicts


@pytest.mark.parametrize(
    ("text", "line"),
    [("a\nb\n", "b"), ("a\n\n  \n", "a"), ("  x  ", "x"), ("", None), ("\n \n", None)],
)
def test_last_nonempty_line(text: str, line: str | None) -> None:
    assert last_nonempty_line(text) == line


def test_reference_whose_last_line_passes() -> None:
    (v,) = run([case("cat", reference="echo working...; cat in.txt")])
    assert v.status == "passed" and v.ok
    assert v.answer == "42" and v.reference_ok and v.golden_ok and v.exit_code == 0


@pytest.mark.parametrize(
    ("check", "output", "golden"),
    [
        (ContainsAllCheck(expected=("alpha", "beta")), "beta and ALPHA", "alpha beta"),
        (RegexCheck(expected=r"^\d+ files$"), "12 files", "12 files"),
        (JsonEqualCheck(expected='{"a": [1, 2]}'), '{ "a": [1, 2.0] }', '{"a":[1,2]}'),
    ],
)
def test_every_check_kind_is_applied_to_the_last_line(check: Any, output: str, golden: str) -> None:
    c = case("kinds", reference=f"printf '%s\\n' 'noise' '{output}'", check=check, golden=golden)
    (v,) = run([c])
    assert v.status == "passed", v.detail


def test_wrong_reference_answer_fails() -> None:
    (v,) = run([case("wrong", reference="echo 41")])
    assert v.status == "failed" and not v.ok
    assert v.reference_ok is False and v.golden_ok is True
    assert "reference answer '41' fails the check" in v.detail


def test_wrong_golden_answer_fails_even_when_the_reference_passes() -> None:
    (v,) = run([case("golden", reference="cat in.txt", golden="43")])
    assert v.status == "failed" and v.reference_ok is True and v.golden_ok is False
    assert v.detail.startswith("golden answer fails its check")


def test_non_zero_exit_fails_with_stderr_tail() -> None:
    (v,) = run([case("exit", reference="echo 42; echo boom >&2; exit 3")])
    assert v.status == "failed" and v.exit_code == 3
    assert "reference exited with 3: boom" in v.detail


def test_killed_reference_names_the_signal() -> None:
    (v,) = run([case("oom", reference="echo 42; kill -KILL $$")])
    assert v.status == "failed" and v.exit_code == 137
    assert "killed by SIGKILL, exit 137 (likely out of memory" in v.detail


def test_no_output_fails() -> None:
    (v,) = run([case("silent", reference="true")])
    assert v.status == "failed" and v.detail == "reference printed nothing"


def test_timeout_fails_and_kills_the_reference() -> None:
    started = time.monotonic()
    (v,) = run([case("slow", reference="sleep 30; echo 42", timeout_s=5)])
    assert time.monotonic() - started < 20
    assert v.status == "failed" and v.timed_out
    assert "timed out after 5s" in v.detail


def test_case_without_reference_only_checks_the_golden_answer() -> None:
    ok, bad = run([case("ok", reference=None), case("bad", reference=None, golden="7")])
    assert ok.status == "no_reference" and ok.ok and ok.reference_ok is None
    assert bad.status == "failed" and "golden answer fails" in bad.detail
    assert LocalSandbox.instances == []  # nothing to execute, no sandbox started


def test_each_case_sees_a_fresh_workspace() -> None:
    first = case("first", reference="touch leftover .hidden; cat in.txt")
    second = case(
        "second",
        reference="ls -A | sort | tr '\\n' ' '; echo; [ -e leftover ] || [ -e .hidden ] || echo 42",
        files={"other.txt": "x"},
    )
    verdicts = run([first, second], jobs=1)
    assert [v.status for v in verdicts] == ["passed", "passed"], verdicts
    (sandbox,) = LocalSandbox.instances  # one sandbox, reused across its cases
    assert sandbox.closed


def test_a_workspace_that_cannot_be_wiped_is_replaced_by_a_fresh_sandbox() -> None:
    dirty = case("dirty", reference="touch undeletable; cat in.txt")
    after = case("after", reference="[ -e undeletable ] || cat in.txt")
    verdicts = run([dirty, after], jobs=1)
    assert [v.status for v in verdicts] == ["passed", "passed"], verdicts
    first, second = LocalSandbox.instances
    assert first.closed and second.closed


def test_verdicts_keep_case_order_and_workers_share_the_cases() -> None:
    cases = [case(f"n{i}", reference=f"sleep 0.{i % 3}; cat in.txt") for i in range(7)]
    verdicts = run(cases, jobs=3)
    assert [v.case_id for v in verdicts] == [c.id for c in cases]
    assert all(v.status == "passed" for v in verdicts)
    assert len(LocalSandbox.instances) == 3
    assert all(s.closed for s in LocalSandbox.instances)


def test_more_jobs_than_cases_starts_only_what_is_needed() -> None:
    run([case("only", reference="cat in.txt")], jobs=8)
    assert len(LocalSandbox.instances) == 1


def test_a_sandbox_that_fails_to_start_fails_its_cases_and_the_run_goes_on() -> None:
    verdicts = run(
        [case("a", reference="cat in.txt"), case("b", reference="cat in.txt")], fail_start=True
    )
    assert [v.status for v in verdicts] == ["failed", "failed"]
    assert all(
        "sandbox error: RuntimeError: container would not start" in v.detail for v in verdicts
    )


def test_judge_is_pure_over_an_exec_result() -> None:
    c = case("pure", reference="irrelevant")
    v = judge(c, run_check, LocalResult(0, "thinking\n42\n\n", "", False), duration_s=1.5)
    assert v.status == "passed" and v.duration_s == 1.5 and v.answer == "42"
    v = judge(c, run_check, LocalResult(None, "", "", True))
    assert v.status == "failed" and v.timed_out
    v = judge(c, run_check, None, error="docker went away")
    assert v.status == "failed" and v.detail.startswith("sandbox error: docker went away")


def test_local_sandbox_matches_the_docker_sandbox_signatures() -> None:
    """The double must keep the shape of streams.docker_sandbox.DockerSandbox."""
    import inspect

    from streams.docker_sandbox import DockerSandbox

    for name in ("start", "write_files", "exec", "close"):
        real = inspect.signature(getattr(DockerSandbox, name))
        ours = inspect.signature(getattr(LocalSandbox, name))
        assert list(real.parameters) == list(ours.parameters), name
