"""Run-wide pacing (contracts/admission.py) and the size of a stored StartRun decision.

Given a run decided by `decide_command`, when results and dead letters come in, then the
released-but-unfinished jobs never exceed maxConcurrency, every planned job is released
exactly once, and the released plan is exactly the jobs StartRun decided. Release order:
jobs with an unmeasured case first (plan order), then the longest expected first."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from contracts.admission import (
    admit,
    decode_released,
    encode_released,
    expected_job_ms,
    job_finished,
    open_jobs_of,
    release_order,
    run_plan,
)
from contracts.command_decider import AdminState, decide_command
from contracts.commands import StartRun
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CaseJobDeadLettered
from contracts.ids import case_result_id, derive_id
from contracts.jobs import CaseJob
from contracts.run_progress import RunProgress, evolve_run, result_key
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


def graded(
    job: CaseJob, case_id: str, latency_ms: float = 10.0, post_check_ms: float | None = None
) -> CaseGraded:
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
        latency_ms=latency_ms,
        cost_usd=0.001,
        timed_out=False,
        diagnostics={} if post_check_ms is None else {"post_check_ms": f"{post_check_ms:.1f}"},
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
    released, open_jobs, first = admit(p, plan, frozenset(), frozenset())
    sent = list(first)
    # Nothing measured yet: the first wave measures each chunk by a different model.
    assert sent == release_order(p, plan, range(len(plan)))[:max_concurrency]
    wave = [plan[i] for i in sent[:3]]
    assert len({j.model for j in wave}) == len({j.chunk for j in wave}) == len(wave)
    while open_jobs:
        assert len(open_jobs) <= max_concurrency
        # Some open job delivers one more result (or is dead-lettered), in random order;
        # duplicates of earlier events change nothing.
        job = plan[rnd.choice(sorted(open_jobs))]
        todo = [c for c in job.case_ids if result_key(job.model, c, job.rep) not in p.outcomes]
        events: list[EventBase] = (
            [dead(job)]
            if rnd.random() < 0.1
            else [graded(job, rnd.choice(todo), rnd.uniform(1.0, 5000.0))]
        )
        for ev in events * 2:
            p = evolve_run(p, ev)
        released, open_jobs, now = admit(p, plan, released, open_jobs)
        assert set(now) <= open_jobs and not set(now) & set(sent)
        sent += now
        assert open_jobs == open_jobs_of(p, plan, released)  # what a restart rebuilds
        assert decode_released(encode_released(released)) == released  # and what it reads
    assert released == frozenset(range(len(plan)))
    assert sorted(sent) == list(range(len(plan)))  # each job released exactly once
    assert all(job_finished(p, j) for j in plan)


def test_a_completed_run_releases_nothing() -> None:
    cases = [f"k{i:02d}" for i in range(5)]
    p, _, _ = start(config(models=2, reps=1, max_concurrency=1), cases)
    done = p.model_copy(update={"completed": True})
    assert admit(done, run_plan(done, cases), frozenset(), frozenset()) == (
        frozenset(),
        frozenset(),
        (),
    )


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


def finish(p: RunProgress, job: CaseJob, ms: dict[str, float]) -> RunProgress:
    for c in job.case_ids:
        p = evolve_run(p, graded(job, c, ms.get(c, 10.0)))
    return p


def test_once_measured_the_longest_jobs_go_first() -> None:
    """Given the first model's jobs measured the dataset (one case takes 9 s, the rest
    10 ms), then every other model's job with that case goes before the short ones."""
    cases = [f"k{i:02d}" for i in range(15)]  # three chunks of five
    p, _, _ = start(config(models=3, reps=1, max_concurrency=2), cases)
    plan = run_plan(p, cases)
    slow = {"k12": 9000.0}  # in each model's last chunk
    for job in plan[:3]:  # the first model: nothing was known, so plan order measured it
        p = finish(p, job, slow)
    order = release_order(p, plan, range(3, len(plan)))
    assert order == [5, 8, 3, 4, 6, 7]  # the slow chunk of each model, then plan order
    assert [plan[i].chunk for i in order[:2]] == [2, 2]


def test_unmeasured_cases_go_first_staggered_across_models() -> None:
    """Jobs with an unmeasured case go first: model k measures chunk k first, then k + 1,
    ... (waves, each in chunk order), so no single model sets every case's estimate."""
    cases = [f"k{i:02d}" for i in range(15)]
    p, _, _ = start(config(models=2, reps=1, max_concurrency=2), cases)
    plan = run_plan(p, cases)  # model m's chunk c is plan[3 * m + c]
    assert release_order(p, plan, range(len(plan))) == [0, 4, 2, 3, 1, 5]
    p = finish(p, plan[0], {"k00": 5000.0})  # chunk 0 measured, 1 and 2 not
    assert expected_job_ms(p, plan)[1:3] == [None, None]
    # wave 0: model 1's chunk 1, model 0's chunk 2; wave 1: model 0's chunk 1, model 1's
    # chunk 2; then the measured chunk 0 of model 1
    assert release_order(p, plan, range(1, len(plan))) == [4, 2, 1, 5, 3]
    # admit sends in that order, as far as the slots go
    _, open_jobs, send = admit(p, plan, frozenset({0}), frozenset())
    assert send == (4, 2) and open_jobs == {4, 2}


def test_a_slower_model_expects_longer_jobs() -> None:
    """A model measured three times as slow on the same cases gets a larger factor, shrunk
    towards 1 by the prior (five cases at the mean); a case costs its longest result."""
    cases = [f"k{i:02d}" for i in range(10)]
    p, _, _ = start(config(models=2, reps=1, max_concurrency=2), cases)
    plan = run_plan(p, cases)  # model 0: jobs 0, 1; model 1: jobs 2, 3
    p = finish(p, plan[0], {c: 100.0 for c in cases})
    p = finish(p, plan[2], {c: 300.0 for c in cases})  # the same cases, 3x slower
    est = expected_job_ms(p, plan)
    assert est[1] is None and est[3] is None
    # case means 200, longest 300; model 0: (500 + 1000) / (1000 + 1000) = 0.75; model 1: 1.25
    assert est[0] == pytest.approx(0.75 * 1500) and est[2] == pytest.approx(1.25 * 1500)
    assert release_order(p, plan, [0, 2]) == [2, 0]


def test_a_case_costs_its_longest_draw() -> None:
    """Given the first model answered k03 wrong at once (10 ms), when the second model
    answers it right in 20 s, then the third model's job with k03 goes first."""
    cases = [f"k{i:02d}" for i in range(15)]
    p, _, _ = start(config(models=3, reps=1, max_concurrency=2), cases)
    plan = run_plan(p, cases)  # model m's chunk c is plan[3 * m + c]
    for job in plan[:3]:
        p = finish(p, job, {"k03": 10.0})
    p = finish(p, plan[3], {"k03": 20_000.0})  # model 1, chunk 0
    assert release_order(p, plan, range(4, len(plan)))[0] == 6  # model 2, chunk 0


def test_a_case_costs_its_post_check_too() -> None:
    """Given every case took 10 ms, when k07's post-check took 12 s, then the jobs with
    k07 go first."""
    cases = [f"k{i:02d}" for i in range(15)]
    p, _, _ = start(config(models=2, reps=1, max_concurrency=2), cases)
    plan = run_plan(p, cases)  # model m's chunk c is plan[3 * m + c]
    for job in plan[:3]:
        p = finish(p, job, {})
    p = evolve_run(p, graded(plan[4], "k07", 10.0, post_check_ms=12_000.0))
    assert p.outcomes[result_key(plan[4].model, "k07", 0)].post_check_ms == 12_000.0
    assert release_order(p, plan, [3, 4, 5]) == [4, 3, 5]


def test_a_job_finished_before_its_release_is_not_sent() -> None:
    """A crash after a job was sent, before its release was recorded: its results came
    in, so it counts as released and is not sent again."""
    cases = [f"k{i:02d}" for i in range(10)]
    p, _, _ = start(config(models=1, reps=1, max_concurrency=1), cases)
    plan = run_plan(p, cases)
    p = finish(p, plan[0], {})
    released, open_jobs, send = admit(p, plan, frozenset(), frozenset())
    assert (released, open_jobs, send) == (frozenset({0, 1}), frozenset({1}), (1,))


@pytest.mark.parametrize(
    ("stored", "released"),
    [
        (None, set()),
        (0, set()),
        (3, {0, 1, 2}),  # the older shape: a released prefix of the plan
        ("", set()),
        ("5", {0, 2}),
        (encode_released(frozenset({0, 7, 2399})), {0, 7, 2399}),
    ],
)
def test_released_set_as_stored(stored: object, released: set[int]) -> None:
    assert decode_released(stored) == released


def test_a_large_released_set_stays_small() -> None:
    assert len(encode_released(frozenset(range(2400)))) == 600
