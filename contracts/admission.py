"""Run-wide pacing of case jobs: which of a run's planned jobs may be on the job topic now.

The run's owner (the aggregator, single writer of the run's progress) keeps at most the
snapshot's `maxConcurrency` released-but-unfinished jobs at any moment, however many
workers share the job topic. A job is finished once each of its (model, case, rep) results
is graded or dead-lettered.

Which job goes next (`release_order`): the slots of a run stay busy only until its last
job ends, so a long job released late leaves the other slots idle while it finishes (the
run's tail). The cases' own durations are measured by the run as it goes (every result
carries its case's wall time and post-check time, and a case costs alike for every model
within a factor), so the owner releases first the jobs with a case not measured yet (each
chunk measured once, by a different model each, see `release_order`), then the rest
longest-expected first. A replay of a measured run through 4-slot scheduling (12 orders of
the simulated fleet): slots idle at the tail 134 ms/case in plan order, 45 this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from contracts.jobs import CaseJob, plan_jobs
from contracts.results import CaseOutcome
from contracts.run_progress import RunProgress, result_key

MODEL_PRIOR_CASES = 5.0
"""How many cases' worth of evidence a model's speed factor starts from (at 1.0): one odd
result does not move a model's every job to the front or the back."""


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


def slot_ms(o: CaseOutcome) -> float:
    """What a result cost its job's slot: the case's wall time and its post-check."""
    return o.latency_ms + (o.post_check_ms or 0.0)


def expected_job_ms(p: RunProgress, jobs: Iterable[CaseJob]) -> list[float | None]:
    """Each job's expected slot time from the run's results so far; None when one of its
    cases has no result yet (nothing to go on).

    A case costs the most any model's result of it cost (`slot_ms`): whether a case runs
    long often depends on the draw (a right answer runs the task's tests, a wrong one may
    stop at once), and a long job released late costs the run far more than a short one
    released early. A model's factor is how much slower or faster than the cases' means
    its own results were, shrunk towards 1 by MODEL_PRIOR_CASES cases' worth of evidence.
    """
    case_sum: dict[str, float] = {}
    case_n: dict[str, int] = {}
    case_max: dict[str, float] = {}
    for o in p.outcomes.values():
        ms = slot_ms(o)
        case_sum[o.case_id] = case_sum.get(o.case_id, 0.0) + ms
        case_n[o.case_id] = case_n.get(o.case_id, 0) + 1
        case_max[o.case_id] = max(case_max.get(o.case_id, 0.0), ms)
    case_mean = {c: s / case_n[c] for c, s in case_sum.items()}
    prior = MODEL_PRIOR_CASES * (sum(case_mean.values()) / len(case_mean) if case_mean else 0.0)
    own: dict[str, float] = {}
    typical: dict[str, float] = {}
    for o in p.outcomes.values():
        own[o.model] = own.get(o.model, 0.0) + slot_ms(o)
        typical[o.model] = typical.get(o.model, 0.0) + case_mean[o.case_id]
    out: list[float | None] = []
    for job in jobs:
        if any(c not in case_max for c in job.case_ids):
            out.append(None)
            continue
        factor = (
            (own.get(job.model, 0.0) + prior) / (typical.get(job.model, 0.0) + prior)
            if prior > 0
            else 1.0
        )
        out.append(factor * sum(case_max[c] for c in job.case_ids))
    return out


def release_order(p: RunProgress, plan: Sequence[CaseJob], candidates: Iterable[int]) -> list[int]:
    """`candidates` (indices into `plan`) in the order they should be released.

    First the jobs with a case not measured yet, staggered: model k of the plan measures
    chunk k first, then chunk k + 1, ... (each chunk once per wave, in chunk order), so
    the first measurements of the dataset come from every model, not all from the first
    (a weak model's quick wrong answers would make every case look short). Then the
    longest expected first (to the millisecond; ties in plan order). Pure: the same
    progress gives the same order.
    """
    position: dict[str, int] = {}
    for job in plan:
        position.setdefault(job.model, len(position))
    models = max(len(position), 1)
    indices = sorted(set(candidates))
    estimates = expected_job_ms(p, (plan[i] for i in indices))
    keyed = []
    for i, est in zip(indices, estimates, strict=True):
        job = plan[i]
        if est is None:
            wave = (job.chunk - position[job.model]) % models
            keyed.append((0, job.rep, wave, job.chunk, i))
        else:
            keyed.append((1, 0, 0, -round(est), i))
    return [key[-1] for key in sorted(keyed)]


def admit(
    p: RunProgress, plan: Sequence[CaseJob], released: frozenset[int], open_jobs: frozenset[int]
) -> tuple[frozenset[int], frozenset[int], tuple[int, ...]]:
    """Release more of `plan` while fewer than maxConcurrency jobs are open.

    `released` are the plan indices released so far, `open_jobs` those of them not yet
    finished (the caller keeps them so each event re-checks a handful of jobs, not the
    whole plan). Returns the new released and open sets, and the indices to send now, in
    `release_order`. A job found finished before its release (a crash after its send,
    before the release was recorded) counts as released and is not sent again.
    """
    if p.completed or p.config is None:
        return released, frozenset(), ()
    limit = p.config.maxConcurrency
    still = {i for i in open_jobs if not job_finished(p, plan[i])}
    if len(still) >= limit or len(released) >= len(plan):
        return released, frozenset(still), ()
    now = set(released)
    send: list[int] = []
    for i in release_order(p, plan, (i for i in range(len(plan)) if i not in released)):
        if job_finished(p, plan[i]):
            now.add(i)
        elif len(still) < limit:
            now.add(i)
            still.add(i)
            send.append(i)
    return frozenset(now), frozenset(still), tuple(send)


def open_jobs_of(
    p: RunProgress, plan: Sequence[CaseJob], released: frozenset[int]
) -> frozenset[int]:
    """The open set after a restart: released jobs not finished yet."""
    return frozenset(i for i in released if i < len(plan) and not job_finished(p, plan[i]))


def encode_released(released: frozenset[int]) -> str:
    """The released set as stored (the aggregator's `released` table): a hex bitmask, bit i
    for plan index i (2,400 jobs fit in 600 characters)."""
    return format(sum(1 << i for i in released), "x")


def decode_released(stored: object) -> frozenset[int]:
    """What `encode_released` stored; an int is the older shape, a released prefix of the
    plan (jobs were released in plan order); nothing stored is nothing released."""
    if isinstance(stored, bool) or stored is None:
        return frozenset()
    if isinstance(stored, int):
        return frozenset(range(stored))
    if isinstance(stored, str) and stored:
        mask = int(stored, 16)
        return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)
    return frozenset()
