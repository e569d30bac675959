"""Re-derive every decider golden answer by running its reference solution in a sandbox.

`verify_cases` spreads the cases over `jobs` workers; each worker owns one sandbox (one
container) and runs its cases serially, wiping the workspace before each case so no case sees
another's files. `judge` is the pure part: given a case and what its reference printed, does
the last non-empty stdout line pass the case's own check, and does the golden answer?

Tasks that change files are graded on the workspace too: a case's hidden post-check must fail
on the untouched workspace and pass once its reference has done the work, and a reference
that changes the workspace needs a post-check (no file-changing task is graded on words
alone).

The sandbox is passed in (the Docker one in production, a local-subprocess one in unit tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from contracts.cases import DeciderCase
from contracts.decider_grading import PostCheckRun, grade_post_check, post_check_command
from contracts.sandbox import RESET_WORKSPACE, ExecResult, Sandbox
from contracts.taxonomy import Tier

RESET_TIMEOUT_S = 30.0
WORKSPACE_MANIFEST = (
    "find . -mindepth 1 -name __pycache__ -prune -o -type f -exec sha256sum {} + -o -print"
    " | LC_ALL=C sort"
)
"""Every path in the workspace, with a hash of each file (bytecode caches left out: importing
a module is not changing the workspace)."""

SandboxFactory = Callable[[int], Sandbox]
"""Builds the sandbox of worker number `i` (not yet started)."""


class CheckOutcome(Protocol):
    @property
    def passed(self) -> bool: ...
    @property
    def detail(self) -> str: ...


RunCheck = Callable[[Any, str], CheckOutcome]
"""`contracts.decider_grading.run_check(check, answer) -> CheckResult(passed, detail)`."""

Status = Literal["passed", "failed", "no_reference"]


class CaseVerdict(BaseModel):
    """The outcome of verifying one decider case."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    tier: Tier
    check_kind: str
    status: Status
    """passed: the reference's answer and the golden answer both pass the check;
    no_reference: the golden answer passes and there is nothing to execute."""
    golden_ok: bool
    """The case's golden_answer passes its own check."""
    reference_ok: bool | None
    """The reference's last non-empty stdout line passes the check (None: no reference)."""
    answer: str | None = None
    """The reference's last non-empty stdout line."""
    exit_code: int | None = None
    timed_out: bool = False
    post_check_untouched: bool | None = None
    """The post-check passed on the untouched workspace (it must not; None: no post-check)."""
    post_check_done: bool | None = None
    """The post-check passed once the reference had run (it must; None: no post-check)."""
    workspace_changed: bool | None = None
    """A reference without a post-check changed the workspace (it must not)."""
    duration_s: float = 0.0
    detail: str = ""
    """Why it failed, in plain words (empty when passed)."""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def last_nonempty_line(text: str) -> str | None:
    """The last line of `text` with something other than whitespace, stripped; None if none."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return None


@dataclass(frozen=True)
class WorkEvidence:
    """What verification saw of the workspace around a reference run."""

    untouched: PostCheckRun | None = None
    """The post-check's run on the untouched workspace."""
    done: PostCheckRun | None = None
    """The post-check's run after the reference."""
    changed: bool | None = None
    """For a case without a post-check: whether the reference changed the workspace."""


def judge(
    case: DeciderCase,
    run_check: RunCheck,
    result: ExecResult | None = None,
    *,
    error: str | None = None,
    duration_s: float = 0.0,
    work: WorkEvidence | None = None,
) -> CaseVerdict:
    """Grade one case from what its reference printed and did to the workspace (pure).

    `result` is None for a case without a reference, or when the sandbox failed (`error`).
    """
    problems: list[str] = []
    golden = run_check(case.check, case.golden_answer)
    if not golden.passed:
        problems.append(f"golden answer fails its check: {golden.detail}")
    common: dict[str, Any] = {
        "case_id": case.id,
        "tier": case.tier,
        "check_kind": case.check.kind,
        "golden_ok": golden.passed,
        "duration_s": duration_s,
    }
    if not case.reference:
        return CaseVerdict(
            **common,
            status="failed" if problems else "no_reference",
            reference_ok=None,
            detail="; ".join(problems),
        )
    if result is None:
        problems.insert(0, f"sandbox error: {error or 'no result'}")
        return CaseVerdict(
            **common, status="failed", reference_ok=False, detail="; ".join(problems)
        )
    answer = last_nonempty_line(result.stdout)
    reference_ok = False
    if result.timed_out:
        problems.insert(0, f"reference timed out after {case.timeout_s}s")
    elif result.exit_code != 0:
        tail = last_nonempty_line(result.stderr) or ""
        problems.insert(0, f"{_exit_reason(result.exit_code)}: {tail}".rstrip(": "))
    elif answer is None:
        problems.insert(0, "reference printed nothing")
    else:
        outcome = run_check(case.check, answer)
        reference_ok = outcome.passed
        if not outcome.passed:
            problems.insert(0, f"reference answer {answer!r} fails the check: {outcome.detail}")
    work = work or WorkEvidence()
    problems += _work_problems(case, work)
    return CaseVerdict(
        **common,
        post_check_untouched=_passed(work.untouched),
        post_check_done=_passed(work.done),
        workspace_changed=work.changed,
        status="passed" if not problems else "failed",
        reference_ok=reference_ok,
        answer=answer,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        detail="; ".join(problems),
    )


def _passed(run: PostCheckRun | None) -> bool | None:
    return None if run is None else grade_post_check(run).passed


def _work_problems(case: DeciderCase, work: WorkEvidence) -> list[str]:
    if case.post_check is None:
        if work.changed:
            return ["the reference changes the workspace, so the case needs a post_check"]
        return []
    problems = []
    if work.untouched is None:
        problems.append("post-check did not run on the untouched workspace")
    elif grade_post_check(work.untouched).passed:
        problems.append("post-check passes on the untouched workspace: it does not check the work")
    if work.done is None:
        problems.append("post-check did not run after the reference")
    elif not (done := grade_post_check(work.done)).passed:
        problems.append(f"post-check fails after the reference: {done.detail}")
    return problems


def _exit_reason(code: int | None) -> str:
    """`exited with 3`, or the signal that killed it (128+N as shells report it, or -N)."""
    signum = None
    if code is not None and 128 < code < 128 + 65:
        signum = code - 128
    elif code is not None and code < 0:
        signum = -code
    if signum is None:
        return f"reference exited with {code}"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    hint = " (likely out of memory: sandboxes are memory-capped)" if name == "SIGKILL" else ""
    return f"reference was killed by {name}, exit {code}{hint}"


async def verify_cases(
    cases: Sequence[DeciderCase],
    sandbox_factory: SandboxFactory,
    run_check: RunCheck,
    *,
    jobs: int = 4,
    on_result: Callable[[CaseVerdict], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[CaseVerdict]:
    """Verify every case; verdicts come back in the order of `cases`.

    Cases without a reference are judged without a sandbox. The others are shared among
    `jobs` workers, each with its own sandbox started lazily and reused across its cases; a
    sandbox that fails is closed and replaced for the worker's next case.
    """
    verdicts: dict[int, CaseVerdict] = {}

    def record(position: int, v: CaseVerdict) -> None:
        verdicts[position] = v
        if on_result is not None:
            on_result(v)

    queue: asyncio.Queue[tuple[int, DeciderCase]] = asyncio.Queue()
    for position, case in enumerate(cases):
        if case.reference:
            queue.put_nowait((position, case))
        else:
            record(position, judge(case, run_check))

    async def ready(index: int, sandbox: Sandbox | None) -> Sandbox:
        """`sandbox` with an empty workspace, or a new one when it cannot be wiped (a case
        left files it cannot delete, the container died)."""
        if sandbox is not None:
            if await _reset(sandbox):
                return sandbox
            await _close_quietly(sandbox)
        fresh = sandbox_factory(index)
        try:
            await fresh.start()
            if not await _reset(fresh):
                raise RuntimeError("could not empty the workspace of a new sandbox")
        except BaseException:
            await _close_quietly(fresh)
            raise
        return fresh

    async def worker(index: int) -> None:
        sandbox: Sandbox | None = None
        try:
            while True:
                try:
                    position, case = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = clock()
                try:
                    work = WorkEvidence()
                    if case.post_check is not None:
                        sandbox = await ready(index, sandbox)
                        await sandbox.write_files(case.files)
                        work = WorkEvidence(untouched=await run_post_check(sandbox, case))
                    sandbox = await ready(index, sandbox)
                    result, work = await _run_and_observe(sandbox, case, work)
                except Exception as e:  # the sandbox broke: report it, start afresh next time
                    verdict = judge(
                        case,
                        run_check,
                        error=f"{type(e).__name__}: {e}",
                        duration_s=clock() - started,
                    )
                    record(position, verdict)
                    if sandbox is not None:
                        await _close_quietly(sandbox)
                        sandbox = None
                    continue
                verdict = judge(case, run_check, result, duration_s=clock() - started, work=work)
                record(position, verdict)
        finally:
            if sandbox is not None:
                await _close_quietly(sandbox)

    await asyncio.gather(*(worker(i) for i in range(max(1, min(jobs, queue.qsize())))))
    return [verdicts[i] for i in range(len(cases))]


async def _run_and_observe(
    sandbox: Sandbox, case: DeciderCase, work: WorkEvidence
) -> tuple[ExecResult, WorkEvidence]:
    """Run the reference in the empty workspace; then its post-check, or (without one) see
    whether it changed the workspace."""
    if case.files:
        await sandbox.write_files(case.files)
    before = None if case.post_check is not None else await _manifest(sandbox)
    result: ExecResult = await sandbox.exec(case.reference or "true", float(case.timeout_s))
    if case.post_check is not None:
        return result, replace(work, done=await run_post_check(sandbox, case))
    return result, replace(work, changed=before != await _manifest(sandbox))


async def run_post_check(sandbox: Sandbox, case: DeciderCase) -> PostCheckRun:
    """Run `case`'s hidden post-check in the sandbox's workspace as it is now.

    The files it restores are written back first; the script itself is sent as one command
    and never written to the workspace.
    """
    assert case.post_check is not None
    restored = case.restored_files()
    if restored:
        await sandbox.write_files(restored)
    res = await sandbox.exec(post_check_command(case.post_check), float(case.post_check.timeout_s))
    return PostCheckRun(
        exit_code=res.exit_code, stdout=res.stdout, stderr=res.stderr, timed_out=res.timed_out
    )


async def _manifest(sandbox: Sandbox) -> str:
    res = await sandbox.exec(WORKSPACE_MANIFEST, RESET_TIMEOUT_S)
    if res.exit_code != 0:
        raise RuntimeError(f"could not list the workspace: {res.stderr[-300:]}")
    return str(res.stdout)


async def _reset(sandbox: Sandbox) -> bool:
    """Empty the workspace; False when it could not be (or the sandbox no longer answers)."""
    try:
        result = await sandbox.exec(RESET_WORKSPACE, RESET_TIMEOUT_S)
    except Exception:
        return False
    return bool(result.exit_code == 0)


async def _close_quietly(sandbox: Sandbox) -> None:
    with contextlib.suppress(Exception):
        await sandbox.close()
