"""Re-derive every decider golden answer by running its reference solution in a sandbox.

`verify_cases` spreads the cases over `jobs` workers; each worker owns one sandbox (one
container) and runs its cases serially, wiping the workspace before each case so no case sees
another's files. `judge` is the pure part: given a case and what its reference printed, does
the last non-empty stdout line pass the case's own check, and does the golden answer?

The sandbox is passed in (the Docker one in production, a local-subprocess one in unit tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from contracts.cases import DeciderCase
from contracts.sandbox import RESET_WORKSPACE, ExecResult, Sandbox
from contracts.taxonomy import Tier

RESET_TIMEOUT_S = 30.0

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


def judge(
    case: DeciderCase,
    run_check: RunCheck,
    result: ExecResult | None = None,
    *,
    error: str | None = None,
    duration_s: float = 0.0,
) -> CaseVerdict:
    """Grade one case from what its reference printed (pure).

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
    return CaseVerdict(
        **common,
        status="passed" if not problems else "failed",
        reference_ok=reference_ok,
        answer=answer,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        detail="; ".join(problems),
    )


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
                    sandbox = await ready(index, sandbox)
                    result = await run_reference(sandbox, case)
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
                record(position, judge(case, run_check, result, duration_s=clock() - started))
        finally:
            if sandbox is not None:
                await _close_quietly(sandbox)

    await asyncio.gather(*(worker(i) for i in range(max(1, min(jobs, queue.qsize())))))
    return [verdicts[i] for i in range(len(cases))]


async def run_reference(sandbox: Sandbox, case: DeciderCase) -> ExecResult:
    """Write the case's files into the (empty) workspace and run its reference."""
    assert case.reference is not None
    if case.files:
        await sandbox.write_files(case.files)
    result: ExecResult = await sandbox.exec(case.reference, float(case.timeout_s))
    return result


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
