"""A decider job grades file-changing tasks on the workspace: the hidden post-check runs in the
job's sandbox after the agent finished, and the case passes only with the answer AND the work.

Runs the worker's CaseExecutor with the built-in harness, a scripted provider and a
local-subprocess sandbox (bash in a temp directory)."""

from __future__ import annotations

import asyncio
import json

from contracts.cases import PostCheck
from contracts.events import CaseGraded
from contracts.jobs import CaseJob
from infra.settings import Settings
from streams.execution import CaseExecutor
from streams.harness import BuiltinHarness
from tests.doubles import Call, LocalSandbox, Reply, ScriptedProvider, sum_numbers_case

POST_CHECK = PostCheck(
    script='grep -qx 6 data/total.txt || { echo "FAIL: data/total.txt does not hold 6"; exit 1; }',
    restore=("data/nums.txt",),
)
CASE = sum_numbers_case(
    prompt=sum_numbers_case().prompt.replace(
        "Sum the numbers in data/nums.txt.",
        "Sum the numbers in data/nums.txt and write the total to data/total.txt.",
    ),
    post_check=POST_CHECK,
)
DOES_THE_WORK = "awk '{s+=$1} END {print s}' data/nums.txt > data/total.txt; cat data/total.txt"


def _graded(
    script: list[Reply | BaseException],
) -> tuple[CaseGraded, ScriptedProvider, LocalSandbox]:
    provider = ScriptedProvider(script)
    sandboxes: list[LocalSandbox] = []

    def sandbox(_key: str) -> LocalSandbox:
        sandboxes.append(LocalSandbox())
        return sandboxes[-1]

    executor = CaseExecutor(
        Settings(),
        classifier_cases={},
        decider_cases={CASE.id: CASE},
        sandbox_factory=sandbox,
        harness_factory=lambda _client: BuiltinHarness(provider),
    )
    job = CaseJob(
        job_id="run-1:sim/x:0:0",
        run_id="run-1",
        kind="decider",
        model="sim/x",
        reasoning_effort="low",
        chunk=0,
        rep=0,
        case_ids=(CASE.id,),
    )
    events: list[CaseGraded] = []

    async def emit(event: CaseGraded) -> None:
        events.append(event)

    async def go() -> None:
        try:
            await executor.execute(job, emit, frozenset())
        finally:
            await executor.aclose()

    asyncio.run(go())
    (event,) = events
    (box,) = sandboxes
    return event, provider, box


def test_the_answer_and_the_work_pass() -> None:
    event, _, box = _graded(
        [Reply(None, [Call("c1", "run_shell", {"command": DOES_THE_WORK})]), Reply("6")]
    )
    assert event.score == 1.0, event.diagnostics
    assert event.diagnostics["post_check"] == "post-check passed"
    # the post-check ran last, in the job's sandbox, after the agent's own commands
    assert box.commands[-1].endswith(POST_CHECK.script)
    assert box.closed


def test_the_right_words_without_the_work_fail() -> None:
    event, _, _ = _graded(
        [
            Reply(
                None, [Call("c1", "run_shell", {"command": "awk '{s+=$1} END {print s}' data/*"})]
            ),
            Reply("6"),
        ]
    )
    assert event.score == 0.0
    assert "FAIL: data/total.txt does not hold 6" in event.diagnostics["post_check"]
    assert "answer: exact match" in event.diagnostics["check"]


def test_tampering_with_restored_files_does_not_fake_the_work() -> None:
    # Rewrites the input so that a wrong total "matches" it; the post-check sees the original.
    event, _, _ = _graded(
        [
            Reply(
                None,
                [
                    Call(
                        "c1",
                        "run_shell",
                        {"command": "echo 6 > data/nums.txt; echo 6 > data/total.txt"},
                    )
                ],
            ),
            Reply("6"),
        ]
    )
    assert event.score == 1.0  # the work product is right; restoring the input is harmless
    event, _, _ = _graded(
        [Reply(None, [Call("c1", "run_shell", {"command": "echo 5 > data/total.txt"})]), Reply("6")]
    )
    assert event.score == 0.0


def test_the_agent_never_sees_the_post_check() -> None:
    _, provider, box = _graded(
        [Reply(None, [Call("c1", "run_shell", {"command": "ls -laR; env"})]), Reply("6")]
    )
    seen = json.dumps(provider.requests)
    assert POST_CHECK.script not in seen and json.dumps(POST_CHECK.script)[1:-1] not in seen
    written = "".join(text for w in box.writes for text in w.values())
    assert POST_CHECK.script not in written
    # only after the agent's last command does the post-check reach the sandbox
    post_at = next(i for i, c in enumerate(box.commands) if POST_CHECK.script in c)
    assert post_at == len(box.commands) - 1


def test_a_wrong_answer_fails_without_spending_a_post_check() -> None:
    event, _, box = _graded(
        [Reply(None, [Call("c1", "run_shell", {"command": DOES_THE_WORK})]), Reply("7")]
    )
    assert event.score == 0.0
    assert "work: not checked (the answer fails)" in event.diagnostics["check"]
    assert "post_check" not in event.diagnostics
    assert not any(POST_CHECK.script in c for c in box.commands)
