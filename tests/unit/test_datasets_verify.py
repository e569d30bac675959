"""Reference verification logic, run against a local-subprocess sandbox (no Docker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from contracts.cases import (
    FINAL_ANSWER_INSTRUCTION,
    ContainsAllCheck,
    DeciderCase,
    ExactCheck,
    JsonEqualCheck,
    PostCheck,
    RegexCheck,
)
from contracts.decider_grading import run_check
from datasets.verify import (
    CaseVerdict,
    WorkEvidence,
    judge,
    last_nonempty_line,
    verify_cases,
)
from streams.sandbox import ExecResult
from tests.doubles import UNDELETABLE, LocalSandbox


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
    post_check: PostCheck | None = None,
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
        post_check=post_check,
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
    first = case(
        "first",
        reference="touch leftover .hidden; cat in.txt",
        post_check=PostCheck(script="test -e leftover"),
    )
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
    dirty = case(
        "dirty",
        reference=f"touch {UNDELETABLE}; cat in.txt",
        post_check=PostCheck(script=f"test -e {UNDELETABLE}"),
    )
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
    v = judge(
        c, run_check, ExecResult(0, "thinking\n42\n\n", "", False, 1.0, False), duration_s=1.5
    )
    assert v.status == "passed" and v.duration_s == 1.5 and v.answer == "42"
    v = judge(c, run_check, ExecResult(None, "", "", True, 1.0, False))
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


# ------------------------------------------------------------------ post-checks


def _writes_total(**kw: Any) -> DeciderCase:
    """A task that changes files: write the total into total.txt, then report it."""
    return case(
        kw.pop("topic", "total"),
        reference=kw.pop("reference", "cat in.txt > total.txt; cat total.txt"),
        post_check=kw.pop(
            "post_check",
            PostCheck(script='grep -qx 42 total.txt || { echo "FAIL: no total.txt"; exit 1; }'),
        ),
        **kw,
    )


def test_post_check_fails_untouched_and_passes_after_the_reference() -> None:
    (v,) = run([_writes_total()])
    assert v.status == "passed", v.detail
    assert (v.post_check_untouched, v.post_check_done, v.workspace_changed) == (False, True, None)


def test_post_check_that_passes_on_the_untouched_workspace_fails_verification() -> None:
    (v,) = run([_writes_total(post_check=PostCheck(script="test -e in.txt"))])
    assert v.status == "failed" and v.post_check_untouched is True
    assert "post-check passes on the untouched workspace" in v.detail


def test_post_check_that_fails_after_the_reference_fails_verification() -> None:
    (v,) = run([_writes_total(reference="cat in.txt > wrong.txt; cat in.txt")])
    assert v.status == "failed" and v.reference_ok is True and v.post_check_done is False
    assert "post-check fails after the reference: post-check exited with 1" in v.detail
    assert "FAIL: no total.txt" in v.detail


def test_a_reference_that_changes_the_workspace_needs_a_post_check() -> None:
    changes, reads = run(
        [
            case("changes", reference="echo 42 > out.txt; cat out.txt"),
            case("reads", reference="python3 -c 'print(42)'; cat in.txt"),
        ]
    )
    assert changes.status == "failed" and changes.workspace_changed is True
    assert "the reference changes the workspace, so the case needs a post_check" in changes.detail
    assert reads.status == "passed" and reads.workspace_changed is False


def test_bytecode_caches_do_not_count_as_changes() -> None:
    (v,) = run(
        [
            case(
                "imports",
                reference="python3 -c 'import mod; print(mod.X)'",
                files={"mod.py": "X = 42\n"},
            )
        ]
    )
    assert v.status == "passed" and v.workspace_changed is False, v.detail


def test_post_check_runs_on_restored_files_and_is_never_written_to_the_workspace() -> None:
    # Each reference tampers with the checker; the post-check runs the restored original.
    def tampering(topic: str, reference: str) -> DeciderCase:
        return _writes_total(
            topic=topic,
            files={"in.txt": "42\n", "check.sh": "grep -qx 42 total.txt && echo ok\n"},
            reference=f"echo 'echo ok' > check.sh; {reference}",
            post_check=PostCheck(script='[ "$(bash check.sh)" = ok ]', restore=("check.sh",)),
        )

    done, words = (
        tampering("done", "cat in.txt > total.txt; cat total.txt"),
        tampering("words", "cat in.txt"),
    )
    v_done, v_words = run([done, words], jobs=1)
    assert v_done.status == "passed", v_done.detail
    assert v_words.status == "failed" and v_words.post_check_done is False
    (sandbox,) = LocalSandbox.instances
    written = "".join(text for w in sandbox.writes for text in w.values())
    assert words.post_check is not None and words.post_check.script not in written
    assert any(words.post_check.script in cmd for cmd in sandbox.commands)


def test_judge_reports_post_check_evidence() -> None:
    from contracts.decider_grading import PostCheckRun

    c = _writes_total(topic="judge")
    ok = ExecResult(0, "42\n", "", False, 1.0, False)
    failing = PostCheckRun(exit_code=1, stdout="FAIL: nope\n", stderr="", timed_out=False)
    passing = PostCheckRun(exit_code=0, stdout="", stderr="", timed_out=False)
    good = judge(c, run_check, ok, work=WorkEvidence(untouched=failing, done=passing))
    assert good.status == "passed"
    missing = judge(c, run_check, ok, work=WorkEvidence())
    assert missing.status == "failed"
    assert "post-check did not run on the untouched workspace" in missing.detail
    assert "post-check did not run after the reference" in missing.detail
