"""Run-wide pacing of case jobs: which of a run's planned jobs may be on the job topic now.

The run's owner (the aggregator, single writer of the run's progress) releases jobs in plan
order and keeps at most the snapshot's `maxConcurrency` released-but-unfinished at any
moment, however many workers share the job topic. A job is finished once each of its
(model, case, rep) results is graded or dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts.jobs import CaseJob, plan_jobs
from contracts.run_progress import RunProgress, result_key


def run_plan(p: RunProgress, case_ids: Sequence[str]) -> list[CaseJob]:
    """The run's jobs as StartRun decided them (deterministic: same inputs, same jobs);
    empty until the run's fan-out has been folded."""
    if p.config is None or p.kind is None or p.expected is None or not p.enqueued:
        return []
    configured = (
        p.config.classifierModels
        if p.kind == "classifier"
        else [d.model for d in p.config.deciderModels]
    )
    models = [(m, p.enqueued[m]) for m in configured if m in p.enqueued]
    reps = p.config.classifierRepetitions if p.kind == "classifier" else p.config.deciderRepetitions
    return plan_jobs(
        run_id=p.run_id,
        kind=p.kind,
        models=models,
        case_ids=case_ids,
        repetitions=reps,
        credential=p.config.benchmarkIdentity if p.kind == "decider" else None,
        correlation_id=p.correlation_id,
        max_concurrency=p.config.maxConcurrency,
        harness=p.config.deciderHarness if p.kind == "decider" else "builtin",
    )


def job_finished(p: RunProgress, job: CaseJob) -> bool:
    return all(
        (k := result_key(job.model, c, job.rep)) in p.outcomes or k in p.dead for c in job.case_ids
    )


def admit(
    p: RunProgress, plan: Sequence[CaseJob], released: int, open_jobs: frozenset[int]
) -> tuple[int, frozenset[int]]:
    """Extend the released prefix of `plan` while fewer than maxConcurrency jobs are open.

    `open_jobs` are indices below `released` not yet finished (the caller keeps them so
    each event re-checks a handful of jobs, not the whole plan). Returns the new
    `released` and open set; the caller sends `plan[old_released:new_released]`'s open
    members.
    """
    if p.completed or p.config is None:
        return released, frozenset()
    limit = p.config.maxConcurrency
    still = {i for i in open_jobs if not job_finished(p, plan[i])}
    while released < len(plan) and len(still) < limit:
        if not job_finished(p, plan[released]):
            still.add(released)
        released += 1
    return released, frozenset(still)


def open_jobs_of(p: RunProgress, plan: Sequence[CaseJob], released: int) -> frozenset[int]:
    """The open set after a restart: released jobs not finished yet."""
    return frozenset(i for i in range(min(released, len(plan))) if not job_finished(p, plan[i]))
