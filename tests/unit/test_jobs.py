"""Case-job planning (contracts/jobs.py): deterministic fan-out, every (model, case, rep) once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.ids import case_job_id
from contracts.jobs import CHUNK_SIZE, MAX_JOB_ATTEMPTS, CaseJob, chunked, plan_jobs


def plan(**kw: Any) -> list[CaseJob]:
    base: dict[str, Any] = dict(
        run_id="run-1",
        kind="decider",
        models=[("sim/a", "low"), ("sim/b", "high")],
        case_ids=[f"k{i:02d}" for i in range(12)],
        repetitions=2,
        credential="bench",
        correlation_id="cmd-1",
        max_concurrency=3,
    )
    return plan_jobs(**{**base, **kw})


@pytest.mark.parametrize(
    ("cases", "size", "then"),
    [
        ([], 5, []),
        (["a"], 5, [("a",)]),
        (["c", "a", "b"], 2, [("a", "b"), ("c",)]),  # sorted first: input order is irrelevant
        (
            [f"k{i}" for i in range(10)],
            5,
            [tuple(f"k{i}" for i in range(5)), tuple(f"k{i}" for i in range(5, 10))],
        ),
    ],
)
def test_chunked(cases: list[str], size: int, then: list[tuple[str, ...]]) -> None:
    assert chunked(cases, size) == then


def test_plan_covers_every_model_case_rep_once() -> None:
    jobs = plan()
    assert len(jobs) == 2 * 3 * 2  # models x chunks (5 + 5 + 2) x reps
    covered = [(j.model, c, j.rep) for j in jobs for c in j.case_ids]
    assert len(covered) == len(set(covered)) == 2 * 12 * 2
    assert all(len(j.case_ids) <= CHUNK_SIZE for j in jobs)


def test_plan_fields() -> None:
    for j in plan():
        assert j.job_id == case_job_id("run-1", j.model, j.chunk, j.rep)
        assert j.reasoning_effort == {"sim/a": "low", "sim/b": "high"}[j.model]
        assert (j.run_id, j.kind, j.credential, j.correlation_id) == (
            "run-1",
            "decider",
            "bench",
            "cmd-1",
        )
        assert (j.max_concurrency, j.attempt) == (3, 1)
    assert len({j.job_id for j in plan()}) == 12


def test_plan_is_deterministic_whatever_the_case_order() -> None:
    cases = [f"k{i:02d}" for i in range(12)]
    assert plan() == plan() == plan(case_ids=list(reversed(cases)))


@pytest.mark.parametrize(
    ("models", "cases", "reps", "then_jobs"),
    [
        ([], ["a", "b"], 1, 0),
        ([("m/x", None)], ["a"], 5, 5),
        ([("m/x", None)], [f"c{i}" for i in range(76)], 1, 16),
    ],
)
def test_plan_sizes(models: list[Any], cases: list[str], reps: int, then_jobs: int) -> None:
    assert len(plan(models=models, case_ids=cases, repetitions=reps)) == then_jobs


@given(
    n_models=st.integers(0, 4),
    n_cases=st.integers(1, 23),
    reps=st.integers(1, 5),
    size=st.integers(1, 7),
)
def test_plan_property(n_models: int, n_cases: int, reps: int, size: int) -> None:
    models = [(f"m/{i}", None) for i in range(n_models)]
    cases = [f"c{i}" for i in range(n_cases)]
    jobs = plan(models=models, case_ids=cases, repetitions=reps, chunk_size=size)
    assert len(jobs) == n_models * reps * -(-n_cases // size)
    covered = sorted((j.model, c, j.rep) for j in jobs for c in j.case_ids)
    assert covered == sorted((m, c, r) for m, _ in models for c in cases for r in range(reps))


@pytest.mark.parametrize(
    "bad",
    [
        {"case_ids": ()},
        {"attempt": 0},
        {"chunk": -1},
        {"rep": -1},
        {"max_concurrency": 0},
        {"surprise": 1},
    ],
)
def test_case_job_rejects_invalid_fields(bad: dict[str, Any]) -> None:
    good = plan()[0].model_dump()
    with pytest.raises(ValidationError):
        CaseJob.model_validate({**good, **bad})


def test_retry_budget_is_first_attempt_plus_two() -> None:
    assert MAX_JOB_ATTEMPTS == 3


def test_a_job_round_trips_as_json() -> None:
    job = plan()[0].model_copy(update={"attempt": 2})
    assert CaseJob.model_validate_json(job.model_dump_json()) == job
