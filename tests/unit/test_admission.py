"""Run-wide pacing (contracts/admission.py) and the size of a stored StartRun decision.

Given a run decided by `decide_command`, when results and dead letters come in, then the
released-but-unfinished jobs never exceed maxConcurrency, every planned job is released
exactly once, and the released plan is exactly the jobs StartRun decided."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from contracts.admission import admit, job_finished, open_jobs_of, run_plan
from contracts.command_decider import AdminState, decide_command
from contracts.commands import StartRun
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CaseJobDeadLettered
from contracts.ids import case_result_id, derive_id
from contracts.jobs import CaseJob
from contracts.run_progress import RunProgress, evolve_run
from streams.agents.commands import stored_decision

NOW = "2026-06-11T09:30:00.000Z"


def config(models: int, reps: int, max_concurrency: int) -> BenchmarkConfig:
    return BenchmarkConfig(
        classifierModels=("sim/c",),
        deciderModels=tuple(
            DeciderModel(model=f"vendor/model-{i:02d}", reasoningEffort="medium")
            for i in range(models)
        ),
        deciderRepetitions=reps,
        maxConcurrency=max_concurrency,
        benchmarkIdentity="bench",
    )


def start(cfg: BenchmarkConfig, cases: list[str]) -> tuple[RunProgress, list[CaseJob], Any]:
    outcome = decide_command(
        AdminState(config=cfg),
        {},
        StartRun(command_id="cmd-1", issued_at=NOW, kind="decider", force=False),
        now=NOW,
        case_ids={"decider": cases},
        dataset_hashes={"classifier": "hash-c", "decider": "hash-d"},
        credentials=frozenset({"bench"}),
    )
    p: RunProgress | None = None
    for ev in outcome.events:
        if hasattr(ev, "run_id"):
            p = evolve_run(p, ev)
    assert p is not None
    return p, list(outcome.jobs), outcome


def graded(job: CaseJob, case_id: str) -> CaseGraded:
    return CaseGraded(
        event_id=case_result_id(job.run_id, job.model, case_id, job.rep),
        occurred_at=NOW,
        run_id=job.run_id,
        kind=job.kind,
        model=job.model,
        case_id=case_id,
        rep=job.rep,
        tier="low",
        score=1.0,
        latency_ms=10.0,
        cost_usd=0.001,
        timed_out=False,
        job_id=job.job_id,
    )


def dead(job: CaseJob) -> CaseJobDeadLettered:
    return CaseJobDeadLettered(
        event_id=derive_id("CaseJobDeadLettered", job.job_id),
        occurred_at=NOW,
        run_id=job.run_id,
        job_id=job.job_id,
        model=job.model,
        case_ids=job.case_ids,
        rep=job.rep,
        attempts=3,
        error="boom",
    )


@pytest.mark.parametrize("harness", ["builtin", "kilo", "mini-swe-agent"])
def test_the_aggregators_plan_is_the_plan_start_run_decided(harness: str) -> None:
    cases = [f"k{i:02d}" for i in range(12)]
    cfg = config(models=3, reps=2, max_concurrency=2).model_copy(update={"deciderHarness": harness})
    p, jobs, _ = start(cfg, cases)
    assert run_plan(p, cases) == jobs
    assert {j.harness for j in jobs} == {harness}
    assert run_plan(RunProgress(run_id=p.run_id), cases) == []  # nothing before the fan-out


@pytest.mark.parametrize("max_concurrency", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_released_but_unfinished_never_exceeds_max_concurrency(
    max_concurrency: int, seed: int
) -> None:
    rnd = random.Random(seed)
    cases = [f"k{i:02d}" for i in range(13)]
    p, _, _ = start(config(models=3, reps=2, max_concurrency=max_concurrency), cases)
    plan = run_plan(p, cases)
    released, open_jobs = admit(p, plan, 0, frozenset())
    sent = [i for i in range(released) if i in open_jobs]
    while open_jobs:
        assert len(open_jobs) <= max_concurrency
        # Some open job delivers one more result (or is dead-lettered), in random order;
        # duplicates of earlier events change nothing.
        job = plan[rnd.choice(sorted(open_jobs))]
        todo = [c for c in job.case_ids if not job_finished(p, job)]
        events: list[EventBase] = (
            [dead(job)] if rnd.random() < 0.1 else [graded(job, rnd.choice(todo))]
        )
        for ev in events * 2:
            p = evolve_run(p, ev)
        before = released
        released, open_jobs = admit(p, plan, released, open_jobs)
        sent += [i for i in range(before, released) if i in open_jobs]
        assert open_jobs == open_jobs_of(p, plan, released)  # what a restart rebuilds
    assert released == len(plan)
    assert sorted(sent) == list(range(len(plan)))  # each job released exactly once
    assert all(job_finished(p, j) for j in plan)


def test_a_completed_run_releases_nothing() -> None:
    cases = [f"k{i:02d}" for i in range(5)]
    p, _, _ = start(config(models=2, reps=1, max_concurrency=1), cases)
    done = p.model_copy(update={"completed": True})
    assert admit(done, run_plan(done, cases), 0, frozenset()) == (0, frozenset())


def test_stored_start_run_decision_stays_far_below_kafkas_message_limit() -> None:
    """30 models x 76 cases x 5 reps: 2,400 jobs. Storing them (as before) is ~1 MB; the
    stored decision is the events alone."""
    cases = [f"decider-case-{i:03d}-with-a-longish-identifier" for i in range(76)]
    _, jobs, outcome = start(config(models=30, reps=5, max_concurrency=4), cases)
    assert len(jobs) == 30 * 16 * 5
    with_jobs = len(orjson.dumps([j.model_dump_json() for j in jobs]))
    size = len(orjson.dumps(stored_decision(outcome)))
    print(f"\nstored decision: {size} bytes (the jobs alone would be {with_jobs} bytes)")
    assert with_jobs > 1_000_000  # the test can fail: the old shape breaks the limit
    assert size < 100_000
